"""What every backbone shares: the two inputs, the sex MLP fused with pooled image features,
the regression head, and an output in months."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import keras
from keras import layers

from boneage.finite import finite_float
from boneage.modelcard import IMAGE_INPUT, OUTPUT, SEX_INPUT

# RSNA training-set statistics (../shared/data/README.md): the head predicts a standardized age
# and the last layer maps it back, so every saved or exported model outputs months.
AGE_MEAN = 127.0
AGE_STD = 41.0
MAX_UNITS = 65_536


def _number(name: str, value: Any) -> float:
    number = finite_float(value)
    if number is None:
        raise ValueError(f"{name} must be a finite number, not {type(value).__name__} {str(value)[:40]}")
    return number


def check_options(dropout: Any, l2: Any, head_units: Any, sex_units: Any, age_mean: Any, age_std: Any) -> None:
    """The head's options, refused when the model is built: ``dropout=5`` failed inside Keras, and a string
    ``age_mean`` built a model that failed only at its first training step (a TensorFlow cast error),
    after the run folder was written."""
    if not 0 <= _number("dropout", dropout) < 1:
        raise ValueError(f"dropout must be from 0 up to (not including) 1, not {dropout}")
    if _number("l2", l2) < 0:
        raise ValueError(f"l2 must be 0 or more, not {l2}")
    for name, units in (("head_units", head_units), ("sex_units", sex_units)):
        if isinstance(units, bool) or not isinstance(units, numbers.Integral) or not 1 <= int(units) <= MAX_UNITS:
            raise ValueError(f"{name} must be a whole number from 1 to {MAX_UNITS}, not {str(units)[:40]}")
    _number("age_mean", age_mean)
    if _number("age_std", age_std) <= 0:
        raise ValueError(f"age_std must be above 0, not {age_std}")


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
    """Wrap ``features`` (image tensor -> pooled vector) into the two-input regression model; a ValueError
    for an option out of its range (:func:`check_options`)."""
    check_options(dropout, l2, head_units, sex_units, age_mean, age_std)
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
