"""The built-in backbones, and :func:`build_model` for plugins that add one. Keras is imported
only when a backbone is built."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from boneage.extras import TRAIN, require
from boneage.hookspecs import hookimpl
from boneage.specs import BackboneSpec


def build_model(name: str, input_size: int, features: Callable[[Any], Any], **options: Any) -> Any:
    """A boneage model around ``features``: what a backbone plugin's ``build`` returns.

    ``features`` maps the ``image`` input, a Keras tensor (N, ``input_size``, ``input_size``, 1)
    in [0, 1], to a pooled feature vector (N, C). This adds what every boneage model shares, so
    that training, export and both runtimes take the plugin's model as they take a built-in one:
    the ``male`` input through a small dense layer, fused with the features, a dense head and one
    output ``boneage_months`` scaled back from the RSNA mean and SD. ``options`` (keywords, with
    their defaults): ``dropout=0.3``, ``l2=0.0`` (weight decay of the head), ``head_units=256``,
    ``sex_units=16``, ``age_mean=127.0`` and ``age_std=41.0`` (months). Returns an uncompiled
    ``keras.Model`` named ``name``; needs Keras (extra: train). See docs/plugins.md."""
    require("keras", TRAIN, "building a model")
    from boneage.backbones.head import build_model as build

    return build(name, input_size, features, **options)


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
    """Registers the two built-in backbones through the plugin API, as a third-party one would be;
    Keras is imported only when one is built."""
    return [
        BackboneSpec(name="densenet121", build=_densenet121, default_input_size=256,
                     doc="DenseNet121, dense blocks 6-12-24-16, growth 32"),
        BackboneSpec(name="resnet34_cbam", build=_resnet34_cbam, default_input_size=256,
                     doc="ResNet34 (3-4-6-3 basic blocks) with CBAM"),
    ]
