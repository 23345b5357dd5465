"""Optional dependencies (the extras): a missing one is for the user to install, so it is reported
as :class:`MissingDependencyError` naming the extra (exit 5), never as an internal error."""

from __future__ import annotations

import importlib
from types import ModuleType

from boneage.errors import MissingDependencyError

TRAIN = 'pip install "boneage[train]"'
"""TensorFlow, Keras and tf2onnx: training on TensorFlow, the TensorFlow runtime and export."""

TRAIN_ANY_BACKEND = (
    TRAIN + ', or "boneage[train-torch]" / "boneage[train-jax]" with KERAS_BACKEND=torch / jax '
    "to train without TensorFlow"
)
"""Keras on any backend: enough for training, not for export."""

DICOM = 'pip install "boneage[dicom]"'
"""pydicom and the decoders of compressed DICOM pixel data (see docs/dicom.md)."""


def require(module: str, install: str, purpose: str) -> ModuleType:
    """Import ``module`` where an extra's code is entered, so that a missing package (or a Keras
    whose backend is missing) tells the user what to install before any work is done."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = exc.name or module
        raise MissingDependencyError(f"{purpose} needs {missing}: {install} ({exc})") from exc
