"""The TensorFlow runtime: the Keras model saved beside the ONNX file (same name, ``.keras``).

The model is called through one ``tf.function`` with a fixed input signature (any batch size,
the model's own image size), traced once at load. Calling the Keras model eagerly ran each layer
op by op: about 50 times slower than ONNX Runtime on the same DenseNet (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from boneage.backbones import load_keras_model
from boneage.errors import BoneAgeError, InvalidModelError, ModelNotFoundError
from boneage.extras import TRAIN, require
from boneage.modelcard import IMAGE_INPUT, SEX_INPUT, ModelCard
from boneage.runtimes import checked_months


def _load(path: Path, card: ModelCard, threads: int | None, sha256: str | None = None) -> tuple[Any, Any]:
    """TensorFlow and the card's backbone holding the weights of the ``.keras`` file at ``path``: the archive
    is checked before its weights are read, its own architecture is never built (:func:`load_keras_model`),
    and with ``sha256`` the weights come from the very bytes that were checked against it."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    tf = require("tensorflow", TRAIN, "the TensorFlow runtime")
    if threads:
        with contextlib.suppress(RuntimeError):  # already initialized in this process
            tf.config.threading.set_intra_op_parallelism_threads(threads)
    try:
        return tf, load_keras_model(path, card.backbone, card.input_size, backbone_options(card), sha256=sha256)
    except BoneAgeError:  # refused before Keras read it: too large, a bomb, another checksum, weights that do not fit
        raise
    except Exception as exc:  # Keras raises many untyped errors for a bad file
        raise InvalidModelError(f"{path} is not a loadable Keras model: {exc}") from exc


def backbone_options(card: ModelCard) -> Any:
    """The ``backbone_options`` a model was built with, as its card's notes keep them (a run folder's config,
    an export): ``{}`` (the backbone's defaults) where they say nothing; checked where the backbone is built
    (:func:`boneage.backbones.checked_options`)."""
    options = card.notes.get("backbone_options")
    return {} if options is None else options


def image_shape(model: Any, path: Path) -> tuple[int | None, ...]:
    """(H, W, C) of the model's ``image`` input; a model without the two boneage inputs is refused."""
    inputs = {getattr(t, "name", None): t for t in getattr(model, "inputs", None) or []}
    if set(inputs) != {IMAGE_INPUT, SEX_INPUT}:
        raise InvalidModelError(f"{path} has inputs {sorted(map(str, inputs))}; a boneage model has "
                                f"{IMAGE_INPUT!r} and {SEX_INPUT!r}")
    shape = tuple(inputs[IMAGE_INPUT].shape)
    if len(shape) != 4:
        raise InvalidModelError(f"{path} takes images of shape {shape}, not (N, H, W, 1)")
    return shape[1:]


def compiled(tf: Any, model: Any, shape: tuple[int | None, ...]) -> Any:
    """``model`` as a graph function of (image, male) for any batch size: traced once, not per call."""
    signature = [
        tf.TensorSpec((None, *shape), tf.float32, name=IMAGE_INPUT),
        tf.TensorSpec((None, 1), tf.float32, name=SEX_INPUT),
    ]

    @tf.function(input_signature=signature, jit_compile=False)  # type: ignore[untyped-decorator]  # XLA: slower here
    def forward(image: Any, male: Any) -> Any:
        return model({IMAGE_INPUT: image, SEX_INPUT: male}, training=False)

    return forward


class TensorFlowRuntime:
    """For a model without a usable ONNX file, or to check ONNX against Keras; needs the training
    extra. Calls are serialized by a lock, so one runtime can be shared between threads."""

    name = "tensorflow"

    def __init__(self, onnx_path: Path, card: ModelCard, threads: int | None = None, *,
                 keras: Path | None = None, keras_sha256: str | None = None) -> None:
        """The Keras weights beside the ONNX file (same name), or those its registry entry names
        (an int8 release ships the float weights it was quantized from). The model's image input
        is checked against the card's size here, once, and the graph is traced on a blank image."""
        path = keras or onnx_path.with_suffix(".keras")
        expected = keras_sha256 or card.keras_sha256
        if not path.is_file():
            raise ModelNotFoundError(f"{path} not found: this model can only run on the ONNX runtime")
        tf, self.model = _load(path, card, threads, expected)  # hashed and loaded from the same bytes
        shape = image_shape(self.model, path)
        size = card.input_size
        if any(d not in (None, size) for d in shape[:2]) or shape[2] not in (None, 1):
            raise InvalidModelError(f"{path} takes images of shape {shape}, but its card says ({size}, {size}, 1)")
        self._forward = compiled(tf, self.model, (size, size, 1))
        self._lock = threading.Lock()
        self.predict(np.zeros((1, size, size, 1), np.float32), np.zeros((1, 1), np.float32))  # trace now

    @property
    def traces(self) -> int:
        """How many times the graph was traced: 1 for the life of the runtime."""
        return int(self._forward.experimental_get_tracing_count())

    def predict(self, images: np.ndarray, male: np.ndarray) -> np.ndarray:
        """Months as (N,) float32, checked: NaN, infinity or another shape is a ModelOutputError."""
        with self._lock:
            out = self._forward(np.asarray(images, np.float32), np.asarray(male, np.float32))
        return checked_months(np.asarray(out), len(images))
