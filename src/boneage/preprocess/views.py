"""Test-time averaging over sampling grids: the image itself and copies cropped by about 1% of a
side from alternating corners, so that each lands on another grid of the model's 100-px input.
Averaging the answers over them took a third to a half off the mean change a re-encoding, a 1-px
crop or a rescaling makes (docs/benchmarks.md, robustness), for ``views`` times the model's work."""

from __future__ import annotations

import numpy as np

# (top, bottom, left, right) margins in units of 1% of a side: the image, then its 1% and 2% crops
_MARGINS = ((0, 0, 0, 0), (1, 0, 1, 0), (0, 1, 0, 1), (1, 0, 0, 1), (0, 1, 1, 0), (2, 0, 2, 0), (0, 2, 0, 2), (2, 0, 0, 2))


def grid_views(image: np.ndarray, views: int) -> list[np.ndarray]:
    """``views`` (1 to MAX_VIEWS) copies of ``image``, the first the image itself; the others share
    its memory (crops are views of the array). An image under 10 pixels a side is not cropped."""
    h, w = image.shape[:2]
    dy, dx = max(1, h // 100), max(1, w // 100)
    if min(h, w) < 10:
        return [image] * views
    return [image] + [image[top * dy : h - bottom * dy, left * dx : w - right * dx]
                      for top, bottom, left, right in _MARGINS[1:views]]
