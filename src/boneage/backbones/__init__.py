"""The built-in backbones. Keras is imported only when a backbone is built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from boneage.extras import TRAIN, require
from boneage.hookspecs import hookimpl
from boneage.specs import BackboneSpec


def _densenet121(input_size: int, **options: Any) -> Any:
    from boneage.backbones.densenet import build_densenet121

    return build_densenet121(input_size, **options)


def _resnet34_cbam(input_size: int, **options: Any) -> Any:
    from boneage.backbones.resnet_cbam import build_resnet34_cbam

    return build_resnet34_cbam(input_size, **options)


def load_keras_model(path: Path, compile: bool = False) -> Any:
    """Load a saved model with boneage's custom layers registered (Keras only auto-imports its own)."""
    keras = require("keras", TRAIN, "a .keras model")

    import boneage.backbones.resnet_cbam  # noqa: F401  (registers ChannelPool)

    return keras.saving.load_model(path, compile=compile)


@hookimpl
def boneage_register_backbones() -> list[BackboneSpec]:
    return [
        BackboneSpec("densenet121", _densenet121, 256, "DenseNet121, dense blocks 6-12-24-16, growth 32"),
        BackboneSpec("resnet34_cbam", _resnet34_cbam, 256, "ResNet34 (3-4-6-3 basic blocks) with CBAM"),
    ]
