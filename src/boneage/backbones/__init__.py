"""The built-in backbones, and :func:`build_model` for plugins that add one. Keras is imported
only when a backbone is built."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from boneage.errors import BoneAgeError, InvalidModelError
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


def load_keras_model(path: Path, compile: bool = False, *, sha256: str | None = None,
                     error: type[BoneAgeError] = InvalidModelError, limit: int | None = None) -> Any:
    """Load a saved model with boneage's custom layers registered (Keras only auto-imports its own).

    The archive is checked before Keras opens it (:func:`boneage.models.check_keras_archive`: its size,
    packed and unpacked, at most ``limit`` bytes, default 1 GiB; its members' count, names and
    compression ratios), as ``error``. With ``sha256`` the file is read once, its bytes are checked
    against it (:class:`ChecksumMismatchError`) and Keras loads those very bytes, from a private
    temporary copy: a file swapped after the check is never loaded."""
    from boneage.models import check_keras_file, read_keras_file

    keras = require("keras", TRAIN, "a .keras model")

    import boneage.backbones.resnet_cbam  # noqa: F401  (registers ChannelPool)

    if sha256 is None:
        check_keras_file(path, error, limit)
        return keras.saving.load_model(path, compile=compile)
    data = read_keras_file(path, sha256, error, limit)
    # keras.saving.load_model takes a path only; the folder is the caller's own (mode 0700)
    with tempfile.TemporaryDirectory(prefix="boneage-keras-") as folder:
        copy = Path(folder) / "model.keras"
        copy.write_bytes(data)
        del data
        return keras.saving.load_model(copy, compile=compile)


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
