"""Batch-norm statistics recomputed before each validation (``bn_recalibration``).

A batch-norm layer's moving mean and variance are running averages that follow the last few
hundred training batches, so they swing with them: s13's validation MAE went 10.77, 17.63, 12.34
over three epochs at a learning rate of 5e-5 while its training MAE held at 11.2-11.6.
Recomputed as the exact mean over 2,048 training images augmented as in training (the weights
untouched), epoch 2 validated at 11.10 instead of 17.63 and epoch 5 at 10.66 instead of 11.68;
over clean images instead, 11.01 and 11.26, and s12's best 10.90 against 10.26 as saved (augmented:
10.32): the statistics must describe what the layers were trained on (docs/experiments.md).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np


def batchnorm_layers(model: Any) -> list[Any]:
    """Every BatchNormalization layer of ``model``, nested ones included."""
    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]


def recalibrate(model: Any, images: np.ndarray, male: np.ndarray, batch_size: int) -> int:
    """Set each batch-norm layer's moving statistics to the mean of its batch statistics over
    ``images`` (the model's inputs, with ``male`` row for row), by running them through
    the model in training mode with momentum k/(k+1) at batch k. Returns how many layers it set.
    Only the moving statistics change: a forward pass updates no weight."""
    layers = batchnorm_layers(model)
    momenta = [layer.momentum for layer in layers]
    try:
        for k, start in enumerate(range(0, len(images), batch_size)):
            for layer in layers:
                layer.momentum = k / (k + 1)  # batch 0 replaces the statistics; later ones average in
            batch = slice(start, start + batch_size)
            model({"image": images[batch], "male": male[batch]}, training=True)
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
    return len(layers)


class RecalibrateBatchNorm(keras.callbacks.Callback):  # type: ignore[misc]
    """Recalibrates just before validation: ``fit`` calls ``on_test_begin`` there, after the
    epoch's last training step, so the validation MAE and the checkpoints saved after it use the
    recomputed statistics. Training itself normalizes by each batch's own statistics, so it goes
    on as it would have."""

    def __init__(self, images: np.ndarray, male: np.ndarray, batch_size: int) -> None:
        super().__init__()
        self.images, self.male, self.batch_size = images, male, batch_size

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        recalibrate(self.model, self.images, self.male, self.batch_size)
