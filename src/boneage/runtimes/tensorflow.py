"""The TensorFlow runtime: the Keras model saved beside the ONNX file (same name, ``.keras``)."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from boneage.errors import ChecksumMismatchError, MissingDependencyError, ModelNotFoundError
from boneage.modelcard import IMAGE_INPUT, SEX_INPUT, ModelCard, file_sha256


def _keras() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    try:
        import keras

        import boneage.backbones.resnet_cbam  # noqa: F401  (registers custom layers)
    except ImportError as exc:
        raise MissingDependencyError(
            f"the TensorFlow runtime needs TensorFlow and Keras: pip install 'boneage[train]' ({exc})"
        ) from exc
    return keras


class TensorFlowRuntime:
    name = "tensorflow"

    def __init__(self, onnx_path: Path, card: ModelCard, threads: int | None = None) -> None:
        path = onnx_path.with_suffix(".keras")
        if not path.is_file():
            raise ModelNotFoundError(f"{path} not found: this model can only run on the ONNX runtime")
        if card.keras_sha256 and file_sha256(path) != card.keras_sha256:
            raise ChecksumMismatchError(f"{path} does not match its card: expected sha256 {card.keras_sha256}")
        keras = _keras()
        if threads:
            import tensorflow as tf

            with contextlib.suppress(RuntimeError):  # already initialized in this process
                tf.config.threading.set_intra_op_parallelism_threads(threads)
        self.model = keras.saving.load_model(path, compile=False)
        self._lock = threading.Lock()

    def predict(self, images: np.ndarray, male: np.ndarray) -> np.ndarray:
        with self._lock:
            out = self.model({IMAGE_INPUT: images, SEX_INPUT: male}, training=False)
        return np.asarray(out, dtype=np.float32).reshape(-1)
