"""Prediction intervals from a model's own errors on radiographs it did not train on.

Split-conformal, conditioned on the predicted age (Mondrian): the model errs more on young
children than on adolescents, so one width for everyone would be too wide for some and too narrow
for others. The validation images (never trained on) set each band's half-width. The coverage written in the card is measured by cross-validation: the ids are
split into five folds, and each fold is covered by intervals calibrated on the other four, so every
validation image is a held-out image once and no single lucky or unlucky split decides it.
A dozen lines of numpy; ``crepes`` or ``mapie`` would add a dependency for the same quantile.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from boneage.metrics import age_bands
from boneage.prediction import Interval

log = logging.getLogger(__name__)
LEVEL = 0.9
BAND_EDGES = (72.0, 120.0, 168.0)  # predicted bone age, months: <6 y, 6-10 y, 10-14 y, >=14 y
MIN_BAND = 40  # calibration images a band needs, else it joins its neighbour


class Band(BaseModel):
    """One range of predicted bone age and the interval half-width, in months, that covers it."""
    model_config = ConfigDict(frozen=True)

    below_months: float | None = Field(description="predicted bone ages under this (None: the rest)",
                                       allow_inf_nan=False)
    half_width_months: float = Field(ge=0, allow_inf_nan=False)
    n_calibration: int = Field(ge=0)


class IntervalCalibration(BaseModel):
    """The prediction intervals a model card carries: half-widths by predicted age and their measured coverage.

    Made by :func:`calibrate`; the estimator turns each prediction into an :class:`~boneage.prediction.Interval`
    with :meth:`interval`."""
    model_config = ConfigDict(frozen=True)

    level: float = Field(gt=0, lt=1)
    method: str = "split-conformal on |residual|, by predicted age (Mondrian)"
    bands: tuple[Band, ...] = Field(min_length=1)
    coverage: dict[str, object] = Field(default_factory=dict, description="measured on the held-out half")

    def half_width(self, predicted: float) -> float:
        """The half-width, in months, of the band that the predicted bone age (months) falls in."""
        for band in self.bands:
            if band.below_months is None or predicted < band.below_months:
                return band.half_width_months
        return self.bands[-1].half_width_months

    def interval(self, predicted: float) -> Interval:
        """The interval around a predicted bone age (months), clipped at 0 months, and never so far that it
        leaves out the bone age itself (a negative one: it was [0, w] around -5; the estimator gives 0 instead)."""
        w = self.half_width(predicted)
        low = min(max(predicted - w, 0.0), predicted)
        return Interval(low_months=round(low, 2), high_months=round(predicted + w, 2), level=self.level)


FOLDS = 5


def fold_of(image_id: str) -> int:
    """A fold fixed by the id alone, so the split never depends on order."""
    return hashlib.sha256(f"interval:{image_id}".encode()).digest()[0] % FOLDS


def conformal_quantile(errors: np.ndarray, level: float) -> float:
    """The ceil((n+1) level)-th smallest error: covers a new image with probability >= level."""
    n = len(errors)
    k = math.ceil((n + 1) * level)
    return float(np.sort(errors)[k - 1]) if k <= n else float("inf")


def _bands(predicted: np.ndarray, errors: np.ndarray, level: float, edges: Sequence[float]) -> tuple[Band, ...]:
    """One half-width per band of predicted age; a band with too few images joins the next one
    (the last joins the previous)."""
    cuts = list(edges)
    while cuts:
        counts = np.bincount(np.searchsorted(cuts, predicted, side="right"), minlength=len(cuts) + 1)
        small = np.flatnonzero(counts < MIN_BAND)
        if not small.size:
            break
        cuts.pop(min(int(small[0]), len(cuts) - 1))
    band_of = np.searchsorted(cuts, predicted, side="right")
    return tuple(
        Band(below_months=cuts[i] if i < len(cuts) else None,
             half_width_months=round(conformal_quantile(errors[band_of == i], level), 2),
             n_calibration=int((band_of == i).sum()))
        for i in range(len(cuts) + 1)
    )


def coverage_of(inside: np.ndarray, widths: np.ndarray, truth: np.ndarray, male: np.ndarray | None) -> dict[str, object]:
    """Share of true ages inside their intervals: overall, by true age band (those of the error tables,
    :func:`~boneage.metrics.age_bands`), by sex; None for an empty group, and no NumPy warning. The sexes
    are taken as booleans: an empty list of them is a float array, which ``~`` refused (TypeError)."""
    inside = np.asarray(inside, bool)

    def share(mask: np.ndarray) -> dict[str, object]:
        return {"n": int(mask.sum()), "coverage": round(float(inside[mask].mean()), 3) if mask.any() else None}

    out: dict[str, object] = {**share(np.ones_like(inside)),
                              "mean_width_months": round(float(2 * widths.mean()), 2) if widths.size else None}
    out["by_age"] = {name: share(mask) for name, mask in age_bands(truth).items()}
    if male is not None:
        sexes = np.asarray(male, bool)
        out["by_sex"] = {"male": share(sexes), "female": share(~sexes)}
    return out


def coverage(calibration: IntervalCalibration, predicted: np.ndarray, truth: np.ndarray,
             male: np.ndarray | None = None) -> dict[str, object]:
    """How often these intervals hold the true age on these images."""
    predicted, truth = np.asarray(predicted, float), np.asarray(truth, float)
    widths = np.array([calibration.half_width(p) for p in predicted], dtype=float)
    return coverage_of(np.abs(truth - predicted) <= widths, widths, truth, male)


def calibrate(predicted: np.ndarray, truth: np.ndarray, ids: Sequence[str], male: np.ndarray | None = None,
              level: float = LEVEL, edges: Sequence[float] = BAND_EDGES) -> IntervalCalibration | None:
    """Half-widths from all the validation images, coverage measured by 5-fold cross-validation;
    None (no intervals) when there are too few images for a finite width in every fold."""
    predicted, truth = np.asarray(predicted, float).reshape(-1), np.asarray(truth, float).reshape(-1)
    errors = np.abs(truth - predicted)
    folds = np.array([fold_of(i) for i in ids], dtype=int)
    smallest = min(int((folds != k).sum()) for k in range(FOLDS))
    if math.ceil((smallest + 1) * level) > smallest:
        log.warning("no prediction intervals: %d validation images are too few for %.0f%%", len(ids), 100 * level)
        return None
    widths = np.zeros_like(predicted)
    for k in range(FOLDS):  # each fold covered by intervals calibrated without it
        held = folds == k
        if held.any():
            fold = IntervalCalibration(level=level, bands=_bands(predicted[~held], errors[~held], level, edges))
            widths[held] = [fold.half_width(p) for p in predicted[held]]
    sexes = None if male is None else np.asarray(male, bool).reshape(-1)
    measured = coverage_of(errors <= widths, widths, truth, sexes)
    return IntervalCalibration(level=level, bands=_bands(predicted, errors, level, edges),
                               coverage={"cross_validated": measured, "folds": FOLDS, "n": len(ids)})
