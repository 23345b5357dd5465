"""boneage: pediatric bone age from a hand radiograph and the child's sex.

``import boneage`` stays light: the estimator and its dependencies load on first use.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

from boneage._version import __version__
from boneage.errors import BoneAgeError
from boneage.hookspecs import hookimpl

if TYPE_CHECKING:
    from boneage.estimator import BoneAgeEstimator
    from boneage.prediction import Prediction


def _no_onnx_runtime_telemetry() -> None:
    """ONNX Runtime (1.29 and later, Linux and macOS) writes a device id and an event database
    under ``~/.cache/Microsoft/DeveloperTools/.onnxruntime`` as soon as it is imported, and sends
    usage events: files and traffic nobody asked boneage for. ``ORT_DISABLE_TELEMETRY=1``, set
    before that import, stops all of it; a caller who set the variable keeps their choice. If
    ONNX Runtime was imported first, its files exist already; its events are still turned off."""
    if "ORT_DISABLE_TELEMETRY" in os.environ:
        return
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"
    runtime = sys.modules.get("onnxruntime")
    if runtime is not None and hasattr(runtime, "disable_telemetry_events"):
        runtime.disable_telemetry_events()


_no_onnx_runtime_telemetry()

__all__ = ["BoneAgeError", "BoneAgeEstimator", "Prediction", "__version__", "hookimpl"]


def __getattr__(name: str) -> Any:
    if name == "BoneAgeEstimator":
        from boneage.estimator import BoneAgeEstimator

        return BoneAgeEstimator
    if name == "Prediction":
        from boneage.prediction import Prediction

        return Prediction
    raise AttributeError(f"module 'boneage' has no attribute {name!r}")
