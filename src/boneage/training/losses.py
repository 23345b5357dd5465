"""The training loss: Huber on months (the default), or L1 + MSE on ages scaled by the training
labels' standard deviation (issue 14 asks which trains better; docs/experiments.md)."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="boneage")
class L1PlusMSE(keras.losses.Loss):  # type: ignore[misc]
    """``|e| + e**2`` with ``e`` the error in units of ``scale`` months: the L1 term keeps a steady pull on
    small errors, the squared term a stronger one on large errors. Registered, so a checkpoint reloads."""

    def __init__(self, scale: float = 1.0, name: str = "l1_mse", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.scale = float(scale)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        error = (ops.cast(y_pred, "float32") - ops.cast(y_true, "float32")) / self.scale
        return ops.mean(ops.abs(error) + ops.square(error), axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale}


def build_loss(kind: str, huber_delta: float, age_std: float) -> Any:
    """The loss a config names; ``age_std`` (months) scales L1 + MSE's error."""
    if kind == "l1_mse":
        return L1PlusMSE(scale=age_std)
    return keras.losses.Huber(delta=huber_delta)
