"""Radiographs per second for a batch of full-size files, one thread against prepare-ahead threads.

    BONEAGE_DATA=../shared/data python benchmarks/batch_throughput.py [MODEL] --copies 8 --workers 0 2 4

The 12 full-resolution originals of radiographs/, each listed ``--copies`` times (files, as a user
passes them), run through ``predict_many`` with each ``workers`` setting in the same process
(0: decode, preprocess and infer in turn, as before issue 21). Also the share of the one-thread
time spent decoding, preprocessing and in the model, and whether every setting gave identical
results.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from boneage.cli.arguments import non_negative, pngs, positive, usage_errors

if TYPE_CHECKING:
    from boneage import BoneAgeEstimator


def shares(estimator: BoneAgeEstimator, files: list[Path]) -> dict[str, float]:
    """Seconds per image in decoding, preprocessing (the card's steps and input checks) and the model."""
    from boneage.imageio import read_image

    decode = prepare = model = 0.0
    for f in files:
        t0 = time.perf_counter()
        read_image(f)
        t1 = time.perf_counter()
        x, _ = estimator.preprocess(f)  # decodes again: its decode share is subtracted below
        t2 = time.perf_counter()
        estimator.run(x[None], [True])
        t3 = time.perf_counter()
        decode, prepare, model = decode + (t1 - t0), prepare + (t2 - t1) - (t1 - t0), model + (t3 - t2)
    n = len(files)
    return {"decode": decode / n, "preprocess": prepare / n, "model": model / n}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("BONEAGE_DATA", "../shared/data")))
    parser.add_argument("--copies", type=positive, default=8)
    parser.add_argument("--workers", type=non_negative, nargs="+", default=[0, 2, 4])
    parser.add_argument("--batch-size", type=positive, default=16)
    parser.add_argument("--threads", type=positive, help="ONNX Runtime threads (default: all cores)")
    args = parser.parse_args()
    originals = pngs(parser, args.data / "radiographs")

    from boneage import BoneAgeEstimator

    files = originals * args.copies
    with usage_errors(parser):  # a model that is not there, threads past the bound
        estimator = BoneAgeEstimator(args.model, threads=args.threads)
    estimator.predict_many(originals[:2], [True, True])  # warm-up: sessions, thread pools
    print(f"{estimator.card.ref}, {len(files)} full-size radiographs ({len(originals)} files x {args.copies}), "
          f"batch {args.batch_size}, {os.cpu_count()} cores, ONNX Runtime threads {args.threads or 'all'}\n")
    print("| workers | radiographs/s | speed-up |\n|---|---|---|")
    reference: list[float] | None = None
    base = 0.0
    for workers in args.workers:
        t = time.perf_counter()
        out = estimator.predict_many(files, [True] * len(files), args.batch_size, workers=workers)
        rate = len(files) / (time.perf_counter() - t)
        months = [p.bone_age_months for p in out]  # type: ignore[union-attr]
        reference = reference or months
        base = base or rate
        same = "" if months == reference else " (DIFFERENT results)"
        print(f"| {workers} | {rate:.1f} | {rate / base:.2f}x{same} |")
    split = shares(estimator, originals)
    total = sum(split.values())
    print("\nOne thread, per radiograph: " + ", ".join(
        f"{k} {1000 * v:.0f} ms ({100 * v / total:.0f}%)" for k, v in split.items()))


if __name__ == "__main__":
    main()
