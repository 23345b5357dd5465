"""What ``augment.before_preprocessing`` costs the arrays data path: batch generation alone, no model.

    BONEAGE_DATA=../shared/data python benchmarks/augment_before_speed.py --images 2000 --batches 10

On real rsna-100 images with the default preprocessing (grayscale, resize, CLAHE, normalize): the
memory the training set takes, and images/s of augmented batches of 64 with the augmentation on
CLAHE's output (today's recipe) and before CLAHE (the option), on one thread and on two (Keras's
workers are threads). The model's input is the same shape and dtype either way (checked), so its
step costs the same.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from boneage.cli.arguments import ENV_HINT, positive, require

if TYPE_CHECKING:
    from boneage.training.arrays import ArrayBatches


def rate(batches: ArrayBatches, n: int, threads: int, repeats: int = 3) -> float:
    """Median images/s over ``repeats`` passes of ``n`` batches (after one untimed batch)."""
    batches[0]
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            done = sum(len(x["male"]) for x, _ in pool.map(batches.__getitem__, range(1, n + 1)))
        runs.append(done / (time.perf_counter() - start))
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=positive, default=2000)
    parser.add_argument("--batches", type=positive, default=10)
    parser.add_argument("--batch-size", type=positive, default=64)
    args = parser.parse_args()
    data = Path(os.environ.get("BONEAGE_DATA", "../shared/data"))
    require(parser, data / "rsna-100" / "labels.csv", hint=ENV_HINT)

    from boneage.preprocess import PreprocessConfig, build_pipeline
    from boneage.training.arrays import ArrayBatches, Arrays, load_arrays, load_split_arrays
    from boneage.training.config import Augment, DataSource
    from boneage.training.data import read_source, thin

    records = thin(read_source(DataSource(labels=data / "rsna-100/labels.csv", images=data / "rsna-100")),
                   args.images, 0)
    config = PreprocessConfig.default(100)

    start = time.perf_counter()
    after: Arrays = load_arrays(records, build_pipeline(config), workers=2)
    load_after = time.perf_counter() - start
    start = time.perf_counter()
    before = load_split_arrays(records, config, workers=2)
    load_before = time.perf_counter() - start
    modes = {
        "augment CLAHE's output (default)": (after, Augment(), load_after),
        "augment.before_preprocessing": (before, Augment(before_preprocessing=True), load_before),
    }
    print(f"{len(records)} rsna-100 images, batch {args.batch_size}, {args.batches} timed batches, median of 3\n")
    print("| augmentation | held in memory | load s | images/s, 1 thread | images/s, 2 threads |")
    print("|---|---|---|---|---|")
    shapes = set()
    for name, (arrays, aug, load_s) in modes.items():
        batches = ArrayBatches(arrays, args.batch_size, aug=aug, seed=0, epoch=0)
        x, _ = batches[0]
        shapes.add((x["image"].shape, x["image"].dtype.str))
        mib = arrays.images.nbytes / 2**20
        print(f"| {name} | {mib:.1f} MiB {arrays.images.dtype} | {load_s:.1f} | "
              f"{rate(batches, args.batches, 1):.0f} | {rate(batches, args.batches, 2):.0f} |")
    assert len(shapes) == 1, shapes  # the model gets the same input either way
    print(f"\nmodel input either way: {shapes.pop()}")


if __name__ == "__main__":
    main()
