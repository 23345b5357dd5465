"""Regression metrics in months, overall, by sex and by age band."""

from __future__ import annotations

from typing import Any

import numpy as np

AGE_BANDS_YEARS = ((0, 2), (2, 6), (6, 10), (10, 14), (14, 19))


def summary(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """n, MAE, RMSE, R², bias (mean of predicted - true) and the share off by more than 24 months; ages and errors
    in months. An empty group gives NaN rather than raising, so that a report can hold an empty age band."""
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


def report(true: np.ndarray, pred: np.ndarray, male: np.ndarray) -> dict[str, Any]:
    """:func:`summary` overall, by sex and by true-age band (:data:`AGE_BANDS_YEARS`, the last band closed at
    19 years), and the MAE of always predicting the mean age, the baseline a model must beat."""
    true, pred, male = np.asarray(true, float), np.asarray(pred, float), np.asarray(male, bool)
    bands = {}
    for lo, hi in AGE_BANDS_YEARS:
        last = hi == AGE_BANDS_YEARS[-1][1]
        sel = (true >= lo * 12) & ((true <= hi * 12) if last else (true < hi * 12))
        bands[f"{lo}-{hi}y"] = summary(true[sel], pred[sel])
    return {
        "overall": summary(true, pred),
        "by_sex": {"male": summary(true[male], pred[male]), "female": summary(true[~male], pred[~male])},
        "by_age": bands,
        "baseline_mean_mae": float(np.abs(true - true.mean()).mean()) if true.size else float("nan"),
    }
