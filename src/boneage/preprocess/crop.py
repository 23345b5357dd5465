"""Shared geometry for croppers: a box with a margin, clipped to the image."""

from __future__ import annotations

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def is_uniform(values: np.ndarray) -> bool:
    """Under 16 grey levels of range: blank, or nothing that stands out from its background."""
    return values.size == 0 or int(values.max()) - int(values.min()) < 16


MAX_WORK_SIZE = 8192  # the largest working copy a card may ask for (a 401-digit one overflowed on every image)


def downscale(gray: np.ndarray, work_size: int) -> tuple[np.ndarray, float]:
    """The image shrunk so its longest side is at most ``work_size``, and the scale used."""
    h, w = gray.shape[:2]
    scale = min(1.0, work_size / max(h, w))
    if scale == 1.0:
        return gray, scale
    small = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return small, scale


def expand(box: Box, margin: float, shape: tuple[int, ...]) -> Box:
    """The box grown on each side by ``margin`` times its width and height, clipped to an image of ``shape``, so
    that a tight detection keeps the wrist and the finger tips."""
    x0, y0, x1, y1 = box
    dx, dy = int(round((x1 - x0) * margin)), int(round((y1 - y0) * margin))
    h, w = shape[:2]
    return max(0, x0 - dx), max(0, y0 - dy), min(w, x1 + dx), min(h, y1 + dy)


def apply(image: np.ndarray, box: Box) -> np.ndarray:
    """The part of ``image`` inside ``box`` (a view, not a copy)."""
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]
