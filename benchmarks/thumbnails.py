"""How far an estimate moves when a radiograph is given as a thumbnail: each validation radiograph of
rsna-512 resized (area) to a short side of S pixels, against the same model on the radiograph itself.

    BONEAGE_DATA=../shared/data python benchmarks/thumbnails.py [MODEL] [--sizes 32 48 64 80 100]

The numbers behind ``estimator.SMALL_SHARE`` (the warning for images under 80% of the model's input
side) and benchmarks.md's thumbnail table.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import cv2
import numpy as np

from boneage.cli.arguments import DATA_HINT, require, usage_errors, whole_number


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("BONEAGE_DATA", "../shared/data")))
    parser.add_argument("--sizes", type=whole_number(32, 4096), nargs="+", default=[32, 40, 48, 56, 64, 80, 100, 128, 160],
                        help="short sides in pixels, each at least 32 (the smallest image boneage reads)")
    args = parser.parse_args()
    labels = args.data / "rsna-512" / "labels.csv"
    require(parser, labels, hint=DATA_HINT)

    from boneage import BoneAgeEstimator
    from boneage.training.data import is_validation

    with usage_errors(parser):  # a model that is not there
        estimator = BoneAgeEstimator(args.model, check_input=False)  # the model's answer, not the input checks'
    with labels.open() as f:
        rows = [r for r in csv.DictReader(f) if is_validation(r["id"], 0.1, 42)]
    images = [cv2.imread(str(args.data / "rsna-512" / f"{r['id']}.png"), cv2.IMREAD_GRAYSCALE) for r in rows]
    male = [r["male"] == "1" for r in rows]
    ages = np.array([float(r["boneage"]) for r in rows])
    base = np.array([p.bone_age_months for p in estimator.predict_batch(images, male)])
    print(f"{estimator.card.name} {estimator.card.version} (input {estimator.card.input_size} px), "
          f"{len(images)} validation radiographs of rsna-512; MAE {np.abs(base - ages).mean():.2f} at full size\n")
    print("| short side (px) | mean / max change (months) | changed by more than 10 months | MAE |")
    print("|---|---|---|---|")
    for side in args.sizes:
        small = []
        for image in images:
            h, w = image.shape
            k = side / min(h, w)
            small.append(cv2.resize(image, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA))
        moved = np.array([p.bone_age_months for p in estimator.predict_batch(small, male)])
        change = np.abs(moved - base)
        print(f"| {side} | {change.mean():.2f} / {change.max():.2f} | {(change > 10).sum()} of {len(change)} | "
              f"{np.abs(moved - ages).mean():.2f} |")


if __name__ == "__main__":
    main()
