"""Shared geometry for croppers: a box with a margin, clipped to the image."""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def expand(box: Box, margin: float, shape: tuple[int, ...]) -> Box:
    x0, y0, x1, y1 = box
    dx, dy = int(round((x1 - x0) * margin)), int(round((y1 - y0) * margin))
    h, w = shape[:2]
    return max(0, x0 - dx), max(0, y0 - dy), min(w, x1 + dx), min(h, y1 + dy)


def apply(image: np.ndarray, box: Box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]
