"""DenseNet121 (Huang et al. 2017): BN-ReLU-conv order, bottleneck layers, compression 0.5."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from boneage.backbones.head import build_model, regularizer

BLOCKS = (6, 12, 24, 16)


def _bn_relu_conv(x: Any, filters: int, kernel: int, name: str, reg: Any) -> Any:
    x = layers.BatchNormalization(epsilon=1.001e-5, name=f"{name}_bn")(x)
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    return layers.Conv2D(filters, kernel, padding="same", use_bias=False, kernel_regularizer=reg, name=f"{name}_conv")(x)


def _dense_block(x: Any, layers_count: int, growth: int, name: str, reg: Any) -> Any:
    for i in range(layers_count):
        y = _bn_relu_conv(x, 4 * growth, 1, f"{name}_l{i + 1}_1", reg)
        y = _bn_relu_conv(y, growth, 3, f"{name}_l{i + 1}_2", reg)
        x = layers.Concatenate(name=f"{name}_l{i + 1}_concat")([x, y])
    return x


def _transition(x: Any, compression: float, name: str, reg: Any) -> Any:
    x = _bn_relu_conv(x, int(x.shape[-1] * compression), 1, name, reg)
    return layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)


def build_densenet121(
    input_size: int = 256,
    *,
    growth: int = 32,
    compression: float = 0.5,
    l2: float = 0.0,
    dropout: float = 0.3,
    **head: Any,
) -> keras.Model:
    """DenseNet121 with the shared two-input head (:func:`boneage.backbones.head.build_model`), output in months;
    ``head`` passes further head options (``head_units``, ``sex_units``, ...)."""
    reg = regularizer(l2)

    def features(image: Any) -> Any:
        x = layers.Conv2D(64, 7, strides=2, padding="same", use_bias=False, kernel_regularizer=reg, name="stem_conv")(image)
        x = layers.BatchNormalization(epsilon=1.001e-5, name="stem_bn")(x)
        x = layers.Activation("relu", name="stem_relu")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
        for i, count in enumerate(BLOCKS):
            x = _dense_block(x, count, growth, f"block{i + 1}", reg)
            if i < len(BLOCKS) - 1:
                x = _transition(x, compression, f"transition{i + 1}", reg)
        x = layers.BatchNormalization(epsilon=1.001e-5, name="final_bn")(x)
        x = layers.Activation("relu", name="final_relu")(x)
        return layers.GlobalAveragePooling2D(name="gap")(x)

    return build_model("densenet121", input_size, features, dropout=dropout, l2=l2, **head)
