"""Batch-norm statistics recomputed on clean images before each validation (``bn_recalibration``).

A batch-norm layer's moving mean and variance are running averages over the training batches,
which are augmented (rotation, zoom, brightness, contrast, noise): they describe those batches,
not the clean images a model is validated and used on, and they drift with the last few hundred
of them. Recomputed as the exact mean over clean training images (the weights untouched), s13's
second epoch validated at 11.01 months instead of 17.63 (docs/experiments.md).
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
    ``images`` (preprocessed as at inference, with ``male`` row for row), by running them through
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
    epoch's last training step, so the validation MAE and the checkpoints saved after it use
    statistics of clean images. Training itself normalizes by each batch's own statistics, so it
    goes on as it would have."""

    def __init__(self, images: np.ndarray, male: np.ndarray, batch_size: int) -> None:
        super().__init__()
        self.images, self.male, self.batch_size = images, male, batch_size

    def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
        recalibrate(self.model, self.images, self.male, self.batch_size)
