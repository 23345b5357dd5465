"""Regression metrics in months, overall, by sex and by age band."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

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
