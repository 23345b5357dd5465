"""What every backbone shares: the two inputs, the sex MLP fused with pooled image features,
the regression head, and an output in months."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import layers

from boneage.modelcard import IMAGE_INPUT, OUTPUT, SEX_INPUT

# RSNA training-set statistics (../shared/data/README.md): the head predicts a standardized age
# and the last layer maps it back, so every saved or exported model outputs months.
AGE_MEAN = 127.0
AGE_STD = 41.0


def regularizer(l2: float) -> Any:
    """An L2 kernel regularizer, or ``None`` for ``l2 <= 0`` so that layers carry no regularizer at all."""
    return keras.regularizers.L2(l2) if l2 > 0 else None


def build_model(
    name: str,
    input_size: int,
    features: Callable[[Any], Any],
    *,
    dropout: float = 0.3,
    l2: float = 0.0,
    head_units: int = 256,
    sex_units: int = 16,
    age_mean: float = AGE_MEAN,
    age_std: float = AGE_STD,
) -> keras.Model:
    """Wrap ``features`` (image tensor -> pooled vector) into the two-input regression model."""
    image = keras.Input((input_size, input_size, 1), name=IMAGE_INPUT)
    male = keras.Input((1,), name=SEX_INPUT)
    pooled = features(image)
    sex = layers.Dense(sex_units, activation="relu", name="sex_dense")(male)
    x = layers.Concatenate(name="fuse")([pooled, sex])
    x = layers.Dense(head_units, activation="relu", kernel_regularizer=regularizer(l2), name="head_dense")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    # float32 whatever the training precision: bfloat16 rounds months above 128 to whole ones,
    # and the loss is computed on this output
    x = layers.Dense(1, name="head_out", dtype="float32")(x)
    months = layers.Rescaling(scale=age_std, offset=age_mean, name=OUTPUT, dtype="float32")(x)
    return keras.Model({IMAGE_INPUT: image, SEX_INPUT: male}, months, name=name)
