"""boneage: pediatric bone age from a hand radiograph and the child's sex.

``import boneage`` stays light: the estimator and its dependencies load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from boneage._version import __version__
from boneage.errors import BoneAgeError
from boneage.hookspecs import hookimpl

if TYPE_CHECKING:
    from boneage.estimator import BoneAgeEstimator
    from boneage.prediction import Prediction

__all__ = ["BoneAgeError", "BoneAgeEstimator", "Prediction", "__version__", "hookimpl"]


def __getattr__(name: str) -> Any:
    if name == "BoneAgeEstimator":
        from boneage.estimator import BoneAgeEstimator

        return BoneAgeEstimator
    if name == "Prediction":
        from boneage.prediction import Prediction

        return Prediction
    raise AttributeError(f"module 'boneage' has no attribute {name!r}")
