"""The learning-rate schedule: linear warm-up from a hundredth of the peak, then cosine decay to
a hundredth of the peak (the same curve as Keras's ``CosineDecay`` with warm-up).

Its length can change after the run has started: ``--time-limit`` with ``fit_epochs_to_time``
sets the number of epochs from the measured epoch time, so that the whole cosine tail, where the
validation error falls most, fits the time there is.
"""

from __future__ import annotations

import math
from typing import Any

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="boneage")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):  # type: ignore[misc]
    """Linear warm-up over ``warmup_steps`` from ``alpha * peak``, then cosine decay to ``alpha * peak`` at
    ``total_steps``. ``total_steps`` may be changed on a live schedule (``fit_epochs_to_time``); it is serialized
    so a checkpoint resumes on the same curve."""
    def __init__(self, peak: float, warmup_steps: int, total_steps: int, alpha: float = 0.01) -> None:
        self.peak, self.warmup_steps, self.total_steps, self.alpha = peak, warmup_steps, total_steps, alpha

    def __call__(self, step: Any) -> Any:
        """The learning rate at optimizer step ``step``, as a backend tensor (traced into the train step)."""
        step = ops.cast(step, "float32")
        start = self.peak * self.alpha if self.warmup_steps else self.peak
        warm = start + (self.peak - start) * step / max(self.warmup_steps, 1)
        progress = ops.clip((step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1), 0.0, 1.0)
        cosine = 0.5 * (1.0 + ops.cos(math.pi * progress))
        decayed = self.peak * (self.alpha + (1.0 - self.alpha) * cosine)
        return ops.where(step < self.warmup_steps, warm, decayed)

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, for Keras to save the schedule with a checkpoint and load it back."""
        return {"peak": self.peak, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
                "alpha": self.alpha}


def lr_at(schedule: Any, step: int) -> float:
    """A schedule's learning rate at ``step`` as a Python float, whatever the Keras backend (for logs and tests)."""
    return float(ops.convert_to_numpy(schedule(step)))
