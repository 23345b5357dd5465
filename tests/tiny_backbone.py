"""A small CNN registered as a plugin, so training tests run in seconds instead of minutes."""

from __future__ import annotations

from typing import Any

from boneage import hookimpl, plugins
from boneage.specs import BackboneSpec


def build(input_size: int, **options: Any) -> Any:
    from keras import layers

    from boneage.backbones import build_model

    def features(image: Any) -> Any:
        x = image
        for filters in (16, 32, 64, 128):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization(momentum=0.9)(x)  # settles within a few steps
            x = layers.MaxPooling2D()(layers.Activation("relu")(x))
        return layers.GlobalAveragePooling2D()(x)

    return build_model("tiny_cnn", input_size, features, head_units=64, **options)


class TinyBackbone:
    @hookimpl
    def boneage_register_backbones(self) -> list[BackboneSpec]:
        return [BackboneSpec(name="tiny_cnn", build=build, default_input_size=64, doc="four conv-BN-ReLU-pool blocks, for tests")]


def register() -> None:
    plugins.get_plugins().register(TinyBackbone(), "tests", name="tiny_backbone")
