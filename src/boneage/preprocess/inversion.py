"""Is this radiograph inverted (white background, dark bones)? A logistic regression on grey-level
histograms of the whole image, its border and its centre, fitted on training radiographs upright
and inverted (``tools/train_inversion.py``). The rule it replaced (border brighter than centre)
called radiographs with grey scanner frames inverted and missed a quarter of real inversions."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

import cv2
import numpy as np

SIDE, BORDER, BINS = 64, 6, 8


def features(gray: np.ndarray) -> np.ndarray:
    """Histograms (8 bins) of the whole image, a 6/64 border and the central half, and their
    means and the image median, from a 64x64 working copy of an 8-bit grayscale image."""
    g = cv2.resize(gray, (SIDE, SIDE), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    b = BORDER
    border = np.concatenate([g[:b].ravel(), g[-b:].ravel(), g[:, :b].ravel(), g[:, -b:].ravel()])
    centre = g[SIDE // 4 : 3 * SIDE // 4, SIDE // 4 : 3 * SIDE // 4].ravel()

    def histogram(values: np.ndarray) -> np.ndarray:
        return np.histogram(values, BINS, (0.0, 1.0))[0] / values.size

    stats = [g.mean(), np.median(g), border.mean(), centre.mean(), 1.0]
    return np.concatenate([histogram(g.ravel()), histogram(border), histogram(centre), stats])


def probability(x: np.ndarray, weights: list[float] | np.ndarray) -> float:
    """The logistic model's probability that the image is inverted, from :func:`features` and its weights
    (``tools/train_inversion.py`` uses it too, so training and use cannot disagree)."""
    return float(1 / (1 + np.exp(-float(np.dot(x, weights)))))


@cache
def _weights() -> np.ndarray:
    text = resources.files("boneage.preprocess").joinpath("inversion.json").read_text(encoding="utf-8")
    return np.asarray(json.loads(text)["weights"], dtype=float)


def looks_inverted(gray: np.ndarray) -> bool:
    """True when the fitted check says white-on-black was flipped (8-bit grayscale input)."""
    return probability(features(gray), _weights()) > 0.5
