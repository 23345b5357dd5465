"""The TensorFlow runtime: the Keras model saved beside the ONNX file (same name, ``.keras``)."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from boneage.backbones import load_keras_model
from boneage.errors import ChecksumMismatchError, InvalidModelError, ModelNotFoundError
from boneage.extras import TRAIN, require
from boneage.modelcard import IMAGE_INPUT, SEX_INPUT, ModelCard, file_sha256
from boneage.runtimes import checked_months


def _load(path: Path, threads: int | None) -> Any:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    tf = require("tensorflow", TRAIN, "the TensorFlow runtime")
    if threads:
        with contextlib.suppress(RuntimeError):  # already initialized in this process
            tf.config.threading.set_intra_op_parallelism_threads(threads)
    try:
        return load_keras_model(path)
    except Exception as exc:  # Keras raises many untyped errors for a bad file
        raise InvalidModelError(f"{path} is not a loadable Keras model: {exc}") from exc


class TensorFlowRuntime:
    name = "tensorflow"

    def __init__(self, onnx_path: Path, card: ModelCard, threads: int | None = None, *,
                 keras: Path | None = None, keras_sha256: str | None = None) -> None:
        """The Keras weights beside the ONNX file (same name), or those its registry entry names
        (an int8 release ships the float weights it was quantized from)."""
        path = keras or onnx_path.with_suffix(".keras")
        expected = keras_sha256 or card.keras_sha256
        if not path.is_file():
            raise ModelNotFoundError(f"{path} not found: this model can only run on the ONNX runtime")
        if expected and file_sha256(path) != expected:
            raise ChecksumMismatchError(f"{path} does not match its registry entry or card: expected sha256 {expected}")
        self.model = _load(path, threads)
        self._lock = threading.Lock()

    def predict(self, images: np.ndarray, male: np.ndarray) -> np.ndarray:
        """Months as (N,) float32, checked: NaN, infinity or another shape is a ModelOutputError."""
        with self._lock:
            out = self.model({IMAGE_INPUT: images, SEX_INPUT: male}, training=False)
        return checked_months(np.asarray(out), len(images))
