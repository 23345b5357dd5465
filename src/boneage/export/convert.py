"""Keras -> ONNX with tf2onnx: inputs named ``image`` (NHWC float32 in [0,1]) and ``male``,
output ``boneage_months``, a dynamic batch axis."""

from __future__ import annotations

from typing import Any

from boneage.extras import TRAIN, require
from boneage.modelcard import IMAGE_INPUT, OUTPUT, SEX_INPUT

OPSET = 17


def keras_to_onnx(model: Any, input_size: int, opset: int = OPSET) -> Any:
    """The ONNX graph (an unsealed ``ModelProto``) of a Keras model, traced through one ``tf.function``
    with boneage's input names and a dynamic batch axis, so every runtime and the card agree on them."""
    tf = require("tensorflow", TRAIN, "export to ONNX")
    tf2onnx = require("tf2onnx", TRAIN, "export to ONNX")

    spec = [
        tf.TensorSpec((None, input_size, input_size, 1), tf.float32, name=IMAGE_INPUT),
        tf.TensorSpec((None, 1), tf.float32, name=SEX_INPUT),
    ]

    @tf.function(input_signature=spec)  # type: ignore[untyped-decorator]
    def forward(image: Any, male: Any) -> dict[str, Any]:
        return {OUTPUT: model({IMAGE_INPUT: image, SEX_INPUT: male}, training=False)}

    proto, _ = tf2onnx.convert.from_function(forward, input_signature=spec, opset=opset)
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    return proto
