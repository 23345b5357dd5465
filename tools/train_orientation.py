"""Fit the orientation check (``boneage.preprocess.orientation``) and write its weights as JSON.

    BONEAGE_DATA=../shared/data python tools/train_orientation.py src/boneage/preprocess/orientation.json

Needs numpy and OpenCV only (about a minute of CPU). Half of each batch is shown inverted, so
the check needs no inversion check before it (that one was wrong on 2 of the 12 full-resolution
radiographs, and the turn found on the wrongly inverted copy was then wrong too). Training ids only (``is_validation(id, 0.1,
42)`` false): rsna-100 and rsna-512. Each training radiograph is scored in its 8 turns and
mirrorings and the scorer is fitted so that the softmax picks the upright one. The validation ids
of rsna-100, rsna-512 and all 12 full-resolution radiographs (never trained on at that resolution)
are then shown in all 8 orientations; the accuracies go into the JSON and are printed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np

from boneage.cli.arguments import ENV_HINT, output_file, require
from boneage.preprocess.orientation import ORIENTATIONS, candidates, encode, scores, softmax, transform, working_copy
from boneage.training.data import is_validation

DATA = Path(os.environ.get("BONEAGE_DATA", "../shared/data"))
HIDDEN, EPOCHS, BATCH, SEED, THRESHOLD = 64, 10, 128, 0, 0.9


def images(folder: str, validation: bool | None) -> np.ndarray:
    """64x64 working copies of the ids on one side of the split (None: all ids)."""
    with (DATA / folder / "labels.csv").open() as f:
        ids = [r["id"] for r in csv.DictReader(f) if validation is None or is_validation(r["id"], 0.1, 42) == validation]
    return np.array([working_copy(np.asarray(cv2.imread(str(DATA / folder / f"{i}.png"), cv2.IMREAD_GRAYSCALE))) for i in ids])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fit(train: np.ndarray, rng: np.random.Generator, rate: float = 2e-3, decay: float = 1e-4) -> dict[str, np.ndarray]:
    """Adam on the softmax loss over the 8 candidates of upright images (the right answer: undo nothing)."""
    n = candidates(train[:1]).shape[2]
    params = [rng.normal(0, (2 / n) ** 0.5, (n, HIDDEN)).astype(np.float32), np.zeros(HIDDEN, np.float32),
              rng.normal(0, (1 / HIDDEN) ** 0.5, (HIDDEN, 1)).astype(np.float32)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    step = 0
    for _ in range(EPOCHS):
        order = rng.permutation(len(train))
        for start in range(0, len(train), BATCH):
            x = candidates(train[order[start : start + BATCH]])
            x *= rng.choice(np.array([-1.0, 1.0], np.float32), len(x))[:, None, None]  # half inverted: standardised, 255 - g is -x
            h = x @ params[0] + params[1]
            a = np.maximum(h, 0)
            p = softmax((a @ params[2])[..., 0])
            p[:, 0] -= 1
            dz = (p / len(x))[..., None]
            da = dz @ params[2].T
            da[h <= 0] = 0
            grads = [np.einsum("ncf,nch->fh", x, da), da.sum((0, 1)), np.einsum("nch,nco->ho", a, dz)]
            step += 1
            for j, g in enumerate(grads):
                g = g + decay * params[j]
                m[j] = 0.9 * m[j] + 0.1 * g
                v[j] = 0.999 * v[j] + 0.001 * g * g
                params[j] -= rate * (m[j] / (1 - 0.9**step)) / (np.sqrt(v[j] / (1 - 0.999**step)) + 1e-8)
    return {"w1": params[0], "b1": params[1], "w2": params[2]}


def measure(weights: dict[str, np.ndarray], upright: np.ndarray) -> dict[str, object]:
    """Per orientation shown, of the radiographs as they are and inverted: exact accuracy (8
    classes), turn accuracy, and with the shipped rule (undo a turn when its probability is at
    least THRESHOLD) the share corrected, left alone and turned wrongly; plus mirrored flags."""
    out: dict[str, object] = {"images": len(upright)}
    for inverted in (False, True):
        for c in range(ORIENTATIONS):
            shown = np.ascontiguousarray(transform(255 - upright if inverted else upright, c))
            p = softmax(scores(candidates(shown), weights))
            turns = p[:, :4] + p[:, 4:]
            k, sure = turns.argmax(1), turns.max(1) >= THRESHOLD
            acted = (k != 0) & sure
            name = f"{'inverted, ' if inverted else ''}turned {90 * (c % 4)}{' mirrored' if c >= 4 else ''}"
            out[name] = {
                "exact": round(float((p.argmax(1) == c).mean()), 4),
                "turn": round(float((k == c % 4).mean()), 4),
                "correct_after_rule": round(float(((acted & (k == c % 4)) | (~acted & (c % 4 == 0))).mean()), 4),
                "turned_wrongly": round(float((acted & (k != c % 4)).mean()), 4),
                "left_as_is": round(float((~acted).mean()), 4),
                "flagged_mirrored": round(float((p[:, 4:].sum(1) >= THRESHOLD).mean()), 4),
            }
    return out


def arguments() -> argparse.Namespace:
    """The output file, and the data it is fitted on, checked before any image is read."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=output_file, help="the JSON to write: src/boneage/preprocess/orientation.json")
    args = parser.parse_args()
    labels = [DATA / folder / "labels.csv" for folder in ("rsna-100", "rsna-512", "radiographs")]
    require(parser, *labels, hint=ENV_HINT)
    return args


def main() -> None:
    args = arguments()
    train = np.concatenate([images("rsna-100", False), images("rsna-512", False)])
    weights = fit(train, np.random.default_rng(SEED))
    metrics = {"rsna-100 validation ids": measure(weights, images("rsna-100", True)),
               "rsna-512 validation ids": measure(weights, images("rsna-512", True)),
               "radiographs (all 12 at full resolution; 10 of these ids were trained on at 100 px)": measure(weights, images("radiographs", None))}
    record = {
        "model": f"scorer {candidates(train[:1]).shape[2]}-{HIDDEN}-1 (ReLU), softmax over the 8 orientations",
        "threshold": THRESHOLD,
        "trained_on": {"data": {f: sha256(DATA / f / "labels.csv") for f in ("rsna-100", "rsna-512")},
                       "note": "labels.csv sha256 per folder; images of every id with is_validation(id, 0.1, 42) false",
                       "images": len(train), "epochs": EPOCHS, "seed": SEED},
        "validation": metrics,
        "weights": {k: encode(v) for k, v in weights.items()},
    }
    args.output.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
