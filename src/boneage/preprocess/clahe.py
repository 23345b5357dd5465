"""CLAHE in floating point: OpenCV's algorithm (clipped tile histograms, their cumulative look-up
tables, bilinear blending between tiles) without its three roundings to 8 bits, of the resized
image, of the tables and of the output.

On a low-contrast radiograph the tables are steep (two to four grey levels out per level in), so
rounding the resized image to whole grey levels turned the sub-level differences that a 1-px crop
or a rescaling makes into changes of whole grey levels over large areas, and the estimate moved
with them (issue 18; docs/benchmarks.md, "CLAHE without 8-bit rounding"). On an 8-bit image the
result is OpenCV's within one grey level.
"""

from __future__ import annotations

import cv2
import numpy as np

BINS = 256


def _tile_tables(image: np.ndarray, clip_limit: float, tiles: int) -> tuple[np.ndarray, int, int]:
    """(tiles * tiles * BINS,) float look-up tables, one per tile, and the tile height and width, as
    OpenCV builds them: the image padded to a multiple of the grid by reflection, each tile's
    histogram (of the image rounded to whole levels) clipped and its excess spread over all bins."""
    levels = np.clip(np.rint(image), 0, BINS - 1).astype(np.uint8)
    h, w = levels.shape
    padded = cv2.copyMakeBorder(levels, 0, (-h) % tiles, 0, (-w) % tiles, cv2.BORDER_REFLECT_101)
    th, tw = padded.shape[0] // tiles, padded.shape[1] // tiles
    area = th * tw
    limit = max(int(clip_limit * area / BINS), 1)
    tables = np.empty((tiles, tiles, BINS))
    for ty in range(tiles):
        for tx in range(tiles):
            hist = np.bincount(padded[ty * th:(ty + 1) * th, tx * tw:(tx + 1) * tw].ravel(), minlength=BINS)
            excess = int(np.maximum(hist - limit, 0).sum())
            hist = np.minimum(hist, limit)
            batch, residual = divmod(excess, BINS)
            hist += batch
            if residual:
                hist[np.arange(0, BINS, max(BINS // residual, 1))[:residual]] += 1
            tables[ty, tx] = np.cumsum(hist) * ((BINS - 1) / area)
    return tables.reshape(-1), th, tw


def _blend_weights(n: int, tile: int, tiles: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row (or column): the two neighbouring tiles and the weight of the second, as OpenCV's."""
    position = np.arange(n) / tile - 0.5
    first = np.floor(position).astype(np.intp)
    weight = position - first
    return np.maximum(first, 0), np.minimum(first + 1, tiles - 1), weight


def clahe_float(image: np.ndarray, clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    """CLAHE of a 2-D image on the 0-255 scale (uint8 or float), as float32 on the same scale: each
    pixel's value is read from its four neighbouring tiles' tables by linear interpolation between
    the two levels around it, and blended by its position."""
    values = np.clip(np.asarray(image, np.float32), 0, BINS - 1)
    tables, th, tw = _tile_tables(values, clip_limit, tiles)
    y1, y2, wy = _blend_weights(values.shape[0], th, tiles)
    x1, x2, wx = _blend_weights(values.shape[1], tw, tiles)
    low = np.minimum(values.astype(np.intp), BINS - 2)  # the level below, and its upper neighbour low + 1
    frac = values - low

    def read(ty: np.ndarray, tx: np.ndarray) -> np.ndarray:
        start = (ty[:, None] * tiles + tx[None, :]) * BINS + low
        blended: np.ndarray = tables[start] * (1 - frac) + tables[start + 1] * frac
        return blended

    wx, wy = wx[None, :], wy[:, None]
    top = read(y1, x1) * (1 - wx) + read(y1, x2) * wx
    bottom = read(y2, x1) * (1 - wx) + read(y2, x2) * wx
    out: np.ndarray = (top * (1 - wy) + bottom * wy).astype(np.float32)
    return out
