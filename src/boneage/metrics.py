"""Regression metrics in months, overall, by sex and by age band."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

AGE_BANDS_YEARS = ((0, 2), (2, 6), (6, 10), (10, 14), (14, 19))  # the last holds every older label too


def age_bands(true: np.ndarray) -> dict[str, np.ndarray]:
    """A mask of ``true`` (months) for each band of :data:`AGE_BANDS_YEARS`, named "lo-hiy": the one definition
    that the error tables and the interval coverage share (they differed at the last band). The atlas ends at
    19 years, but the labels check allows up to 25, so the last band holds everything from 14 years up: no
    label falls into no band."""
    true = np.asarray(true, float)
    last = len(AGE_BANDS_YEARS) - 1
    return {f"{lo}-{hi}y": (true >= lo * 12) & ((true < hi * 12) if i < last else True)
            for i, (lo, hi) in enumerate(AGE_BANDS_YEARS)}


def summary(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """n, MAE, RMSE, R², bias (mean of predicted - true) and the share off by more than 24 months; ages and errors
    in months. An empty group gives NaN (R² too for a group of one age) rather than raising, so that a report can
    hold an empty age band; :func:`report` writes those as None."""
    true, pred = np.asarray(true, float), np.asarray(pred, float)
    err = pred - true
    ss_tot = float(((true - true.mean()) ** 2).sum()) if true.size else 0.0
    return {
        "n": int(true.size),
        "mae": float(np.abs(err).mean()) if true.size else float("nan"),
        "rmse": float(np.sqrt((err**2).mean())) if true.size else float("nan"),
        "r2": float(1 - (err**2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
        "bias": float(err.mean()) if true.size else float("nan"),
        "over_24": float((np.abs(err) > 24).mean()) if true.size else float("nan"),  # off by more than 2 years
    }


def _defined(metrics: dict[str, float]) -> dict[str, float | None]:
    """None for what an empty group leaves undefined: a bare NaN in report.json is not JSON."""
    return {k: None if math.isnan(v) else v for k, v in metrics.items()}


def report(true: np.ndarray, pred: np.ndarray, male: np.ndarray) -> dict[str, Any]:
    """:func:`summary` overall, by sex and by true-age band (:func:`age_bands`), and the MAE of always predicting
    the mean age, the baseline a model must beat; None where a group is empty (or R² of one age), so the result
    is valid JSON."""
    true, pred, male = np.asarray(true, float), np.asarray(pred, float), np.asarray(male, bool)
    return {
        "overall": _defined(summary(true, pred)),
        "by_sex": {"male": _defined(summary(true[male], pred[male])),
                   "female": _defined(summary(true[~male], pred[~male]))},
        "by_age": {name: _defined(summary(true[sel], pred[sel])) for name, sel in age_bands(true).items()},
        "baseline_mean_mae": float(np.abs(true - true.mean()).mean()) if true.size else None,
    }


def paired_difference(true: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike, *, resamples: int = 10_000,
                      level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """MAE of b minus MAE of a on the same images, with a percentile bootstrap interval over the images: whether
    a new model beats the shipped one by more than the sample's noise (the release rule, docs/experiments.md).
    Paired, because two models' errors on one image are strongly correlated, which makes their difference far
    better known than either MAE; an interval wholly below zero says b is better."""
    t, a, b = (np.asarray(x, float) for x in (true, pred_a, pred_b))
    if not (t.shape == a.shape == b.shape and t.ndim == 1 and t.size >= 2):
        raise ValueError("paired_difference wants three 1-D arrays of the same length, at least 2")
    if not (np.isfinite(t).all() and np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired_difference wants finite ages: a NaN would make every figure NaN")
    if not 0 < level < 1 or resamples < 1:
        raise ValueError("level must lie in (0, 1) and resamples be positive")
    gain = np.abs(b - t) - np.abs(a - t)  # per image; negative where b is closer
    rng = np.random.default_rng(seed)
    means = np.concatenate([gain[rng.integers(0, gain.size, (min(1000, resamples - done), gain.size))].mean(1)
                            for done in range(0, resamples, 1000)])  # in chunks: 1,000 x n at most in memory
    tail = (1 - level) / 2
    return {"n": int(gain.size), "mae_a": float(np.abs(a - t).mean()),
            "mae_b": float(np.abs(b - t).mean()), "difference": float(gain.mean()),
            "low": float(np.quantile(means, tail)), "high": float(np.quantile(means, 1 - tail)),
            "b_closer": float((gain < 0).mean())}
