"""Which way up is this radiograph? The models were trained on upright left hands (fingers up, thumb
on the right); a radiograph turned by a quarter turn was answered 40-90 months off on average, and a
mirrored one (a right hand, or a flipped file) 7 months worse than upright (rsna-512 validation).

A tiny network scores how much a 32x32 copy looks like an upright left hand; the image is scored in
each of its 8 turns and mirrorings, and a softmax over the 8 scores says which undoes the input
best. Sharing one scorer makes every orientation equally well detected. Weights are fitted by
``tools/train_orientation.py`` on rotated and mirrored training radiographs (``orientation.json``,
with its data, split and validation metrics)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

import cv2
import numpy as np

SIDE, GRID = 64, 32
ORIENTATIONS = 8  # class c: the upright image mirrored left-right if c >= 4, then turned c % 4 quarter turns anticlockwise


def transform(image: np.ndarray, c: int) -> np.ndarray:
    """Orientation ``c`` applied to an upright image (the last two axes)."""
    if c >= 4:
        image = image[..., ::-1]
    return np.rot90(image, c % 4, axes=(-2, -1))


def undo(image: np.ndarray, c: int) -> np.ndarray:
    """The upright image from one in orientation ``c`` (mirrorings are their own inverse)."""
    return transform(image, c if c >= 4 else (4 - c) % 4)


def features(small: np.ndarray) -> np.ndarray:
    """A GRID x GRID block-mean copy of 64x64 images (N, 64, 64), each standardised, as (N, GRID**2)."""
    n, k = small.shape[0], SIDE // GRID
    x = small.reshape(n, GRID, k, GRID, k).mean((2, 4)).reshape(n, -1).astype(np.float32)
    result: np.ndarray = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-3)
    return result


def candidates(small: np.ndarray) -> np.ndarray:
    """(N, 8, GRID**2): for each 64x64 image, the features of it undone by each orientation."""
    return np.stack([features(np.ascontiguousarray(undo(small, c))) for c in range(ORIENTATIONS)], 1)


def scores(x: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    """The scorer: one hidden ReLU layer, a scalar per candidate."""
    hidden = np.maximum(x @ weights["w1"] + weights["b1"], 0)
    out: np.ndarray = (hidden @ weights["w2"])[..., 0]
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    """Over the last axis, shifted by its maximum so large scores cannot overflow."""
    e = np.exp(z - z.max(-1, keepdims=True))
    result: np.ndarray = e / e.sum(-1, keepdims=True)
    return result


def encode(array: np.ndarray) -> dict[str, object]:
    """A weight array as JSON (little-endian float32, base64): how ``orientation.json`` stores them."""
    return {"shape": list(array.shape), "float32_base64": base64.b64encode(array.astype("<f4").tobytes()).decode()}


def decode(entry: dict[str, object]) -> np.ndarray:
    """The inverse of :func:`encode`; a writable copy."""
    data = base64.b64decode(str(entry["float32_base64"]))
    shape = entry["shape"]
    assert isinstance(shape, list)
    return np.frombuffer(data, "<f4").reshape(shape).copy()


@cache
def _model() -> tuple[dict[str, np.ndarray], float]:
    text = resources.files("boneage.preprocess").joinpath("orientation.json").read_text(encoding="utf-8")
    data = json.loads(text)
    return {k: decode(v) for k, v in data["weights"].items()}, float(data["threshold"])


def working_copy(gray: np.ndarray) -> np.ndarray:
    """The 64x64 copy the scorer reads; training (tools/train_orientation.py) makes it the same way."""
    return np.asarray(cv2.resize(gray, (SIDE, SIDE), interpolation=cv2.INTER_AREA))


@dataclass(frozen=True)
class Orientation:
    """``turns``: quarter turns anticlockwise from upright; ``mirrored``: left and right swapped;
    ``probability``: the model's for this orientation (turns summed over mirrored or not for
    ``turns_probability``)."""

    turns: int
    mirrored: bool
    turns_probability: float
    mirrored_probability: float

    @property
    def degrees_clockwise_to_upright(self) -> int:
        """How far to turn the image clockwise to make it upright."""
        return 90 * self.turns


def detect(gray: np.ndarray) -> Orientation:
    """The orientation of an 8-bit grayscale radiograph (dark background; invert first if not)."""
    weights, _ = _model()
    p = softmax(scores(candidates(working_copy(gray)[None]), weights))[0]
    turns = p[:4] + p[4:]
    k = int(turns.argmax())
    mirrored = float(p[4:].sum())
    return Orientation(k, mirrored > 0.5, float(turns[k]), mirrored)


def threshold() -> float:
    """The probability above which a detected turn is undone (chosen on training ids, see the JSON)."""
    return _model()[1]


def turn_upright(image: np.ndarray, turns: int) -> np.ndarray:
    """Undo ``turns`` quarter turns anticlockwise on an (H, W[, C]) image."""
    return np.ascontiguousarray(np.rot90(image, -turns, axes=(0, 1)))
