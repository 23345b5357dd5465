"""boneage plugin: a MobileNetV3-Small backbone for edge boxes, and an unsharp-mask step.

Registered through the ``boneage`` entry point; Keras is imported only when the backbone is built.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from boneage import hookimpl
from boneage.specs import BackboneSpec, StepSpec, Trace, Transform

__version__ = "0.2.0"
BONEAGE_API_VERSION = "1.0"  # the boneage plugin API this plugin is written for (boneage.specs.API_VERSION)


def build_mobilenet_v3_small(
    input_size: int = 224, *, alpha: float = 1.0, dropout: float = 0.2, bn_momentum: float = 0.99, **head: Any
) -> Any:
    """``bn_momentum``: keras.applications uses 0.999, whose moving averages still hold a third of
    their initial values after 1,000 steps; a short CPU run then validates far worse than it trains."""
    import keras

    from boneage.backbones import build_model

    def features(image: Any) -> Any:
        net = keras.applications.MobileNetV3Small(
            input_shape=(input_size, input_size, 1), alpha=alpha, include_top=False, weights=None,
            include_preprocessing=False, pooling="avg",
        )
        for layer in net.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
        return net(image)

    return build_model("mobilenet_v3_small", input_size, features, dropout=dropout, head_units=128, **head)


class UnsharpParams(BaseModel):
    """``sigma``: the Gaussian blur's SD in pixels of the image the step receives (so it scales with
    where the step sits in the pipeline); ``amount``: how much of the detail is added back."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sigma: float = Field(2.0, gt=0, le=20)
    amount: float = Field(0.5, ge=0, le=3)


def _unsharp(params: UnsharpParams) -> Transform:
    def apply(image: np.ndarray, trace: Trace) -> np.ndarray:
        blurred = cv2.GaussianBlur(image, (0, 0), params.sigma)
        return np.asarray(cv2.addWeighted(image, 1 + params.amount, blurred, -params.amount, 0))

    return apply


@hookimpl
def boneage_register_backbones() -> list[BackboneSpec]:
    """Registers ``mobilenet_v3_small``: a backbone small enough for edge boxes, untrained (no ImageNet weights)."""
    return [BackboneSpec(name="mobilenet_v3_small", build=build_mobilenet_v3_small, default_input_size=224,
                         doc="MobileNetV3-Small (keras.applications, no weights)")]


@hookimpl
def boneage_register_preprocess_steps() -> list[StepSpec]:
    """Registers ``unsharp``, a step a model card can name once this plugin is installed."""
    return [StepSpec(name="unsharp", build=_unsharp, params=UnsharpParams, doc="unsharp mask: sharpen bone edges")]
