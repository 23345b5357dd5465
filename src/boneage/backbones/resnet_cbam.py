"""ResNet34 (He et al. 2016) with CBAM (Woo et al. 2018) after every basic block."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers, ops

from boneage.backbones.head import build_model, regularizer

STAGES = ((64, 3), (128, 4), (256, 6), (512, 3))


@keras.saving.register_keras_serializable(package="boneage")
class ChannelPool(layers.Layer):  # type: ignore[misc]
    """The channel-wise mean and max, stacked: the input of CBAM's spatial attention."""

    def call(self, x: Any) -> Any:
        """(N, H, W, C) -> (N, H, W, 2): mean then max over the channels."""
        return ops.concatenate([ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1)

    def compute_output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Needed by Keras to build the layer symbolically: the input shape with two channels."""
        return (*input_shape[:-1], 2)


def cbam(x: Any, name: str, reduction: int = 16, reg: Any = None) -> Any:
    """Channel then spatial attention (CBAM) on ``x``; the shape is kept. ``reduction`` shrinks the shared MLP
    (at least one unit) and ``name`` prefixes every layer, so it must be unique in the model."""
    channels = int(x.shape[-1])
    hidden = layers.Dense(max(channels // reduction, 1), activation="relu", kernel_regularizer=reg, name=f"{name}_mlp1")
    out = layers.Dense(channels, kernel_regularizer=reg, name=f"{name}_mlp2")
    avg = out(hidden(layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}_gap")(x)))
    mx = out(hidden(layers.GlobalMaxPooling2D(keepdims=True, name=f"{name}_gmp")(x)))
    channel = layers.Activation("sigmoid", name=f"{name}_ca")(layers.Add(name=f"{name}_ca_add")([avg, mx]))
    x = layers.Multiply(name=f"{name}_ca_mul")([x, channel])
    spatial = layers.Conv2D(1, 7, padding="same", activation="sigmoid", kernel_regularizer=reg, name=f"{name}_sa")(
        ChannelPool(name=f"{name}_pool")(x)
    )
    return layers.Multiply(name=f"{name}_sa_mul")([x, spatial])


def _conv_bn(x: Any, filters: int, kernel: int, stride: int, name: str, reg: Any) -> Any:
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, kernel_regularizer=reg, name=f"{name}_conv")(x)
    return layers.BatchNormalization(name=f"{name}_bn")(x)


def basic_block(x: Any, filters: int, stride: int, name: str, reg: Any) -> Any:
    """A ResNet basic block (two 3x3 convolutions) with CBAM before the residual sum; a 1x1 projection shortcut
    when the stride or the channel count changes."""
    shortcut = x
    if stride != 1 or int(x.shape[-1]) != filters:
        shortcut = _conv_bn(x, filters, 1, stride, f"{name}_down", reg)
    y = layers.Activation("relu", name=f"{name}_relu1")(_conv_bn(x, filters, 3, stride, f"{name}_1", reg))
    y = _conv_bn(y, filters, 3, 1, f"{name}_2", reg)
    y = cbam(y, f"{name}_cbam", reg=reg)
    return layers.Activation("relu", name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))


def build_resnet34_cbam(input_size: int = 256, *, l2: float = 0.0, dropout: float = 0.3, **head: Any) -> keras.Model:
    """ResNet34 with CBAM and the shared two-input head, output in months; the head has 512 units (fixed here, so
    ``head`` must not pass ``head_units``)."""
    reg = regularizer(l2)

    def features(image: Any) -> Any:
        x = layers.Activation("relu", name="stem_relu")(_conv_bn(image, 64, 7, 2, "stem", reg))
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
        for s, (filters, blocks) in enumerate(STAGES):
            for b in range(blocks):
                stride = 2 if b == 0 and s > 0 else 1
                x = basic_block(x, filters, stride, f"stage{s + 1}_block{b + 1}", reg)
        return layers.GlobalAveragePooling2D(name="gap")(x)

    return build_model("resnet34_cbam", input_size, features, dropout=dropout, l2=l2, head_units=512, **head)
