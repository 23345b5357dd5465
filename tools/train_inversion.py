"""Fit the inversion check: a logistic regression on grey-level histograms, written as JSON.

    BONEAGE_DATA=../shared/data python tools/train_inversion.py src/boneage/preprocess/inversion.json

Training ids only (every id that is not in the validation split): the rsna-100 images and the
rsna-512 ones (aspect kept, borders and markers as scanned), each as it is and inverted. The
rates on the validation ids are printed and measured again by ``tests/test_preprocess.py``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import cv2
import numpy as np

from boneage.cli.arguments import ENV_HINT, output_file, require
from boneage.preprocess.inversion import features, probability
from boneage.training.data import is_validation

DATA = Path(os.environ.get("BONEAGE_DATA", "../shared/data"))


def images(folder: str, validation: bool) -> list[np.ndarray]:
    with (DATA / folder / "labels.csv").open() as f:
        ids = [r["id"] for r in csv.DictReader(f) if is_validation(r["id"], 0.1, 42) == validation]
    return [cv2.imread(str(DATA / folder / f"{i}.png"), cv2.IMREAD_GRAYSCALE) for i in ids]


def fit(x: np.ndarray, y: np.ndarray, steps: int = 4000, rate: float = 0.5, decay: float = 1e-4) -> np.ndarray:
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-x @ w))
        w -= rate * (x.T @ (p - y) / len(y) + decay * w)
    return w


def rates(weights: list[float], grays: list[np.ndarray]) -> tuple[float, float]:
    """(share of upright radiographs called inverted, share of inverted ones missed)."""
    false = np.mean([probability(features(g), weights) > 0.5 for g in grays])
    missed = np.mean([probability(features(255 - g), weights) <= 0.5 for g in grays])
    return float(false), float(missed)


def arguments() -> argparse.Namespace:
    """The output file, and the data it is fitted on, checked before any image is read."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=output_file, help="the JSON to write: src/boneage/preprocess/inversion.json")
    args = parser.parse_args()
    labels = [DATA / folder / "labels.csv" for folder in ("rsna-100", "rsna-512", "radiographs")]
    require(parser, *labels, hint=ENV_HINT)
    return args


def main() -> None:
    args = arguments()
    train = images("rsna-100", False) + images("rsna-512", False)
    x = np.array([features(g) for g in train] + [features(255 - g) for g in train])
    y = np.array([0.0] * len(train) + [1.0] * len(train))
    weights = [round(float(v), 6) for v in fit(x, y)]
    out = args.output
    out.write_text(json.dumps({"weights": weights, "trained_on": "rsna-100 and rsna-512 training ids, upright and "
                               "inverted", "images": len(train)}, indent=1) + "\n")
    for name in ("rsna-512", "radiographs", "rsna-100"):
        false, missed = rates(weights, images(name, True))
        print(f"{name} validation ids: {100 * false:.2f}% of radiographs called inverted, {100 * missed:.2f}% of inverted ones missed")


if __name__ == "__main__":
    main()
