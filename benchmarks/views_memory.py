"""Memory and speed of many views at once, against how many inputs one model call may take.

    python benchmarks/views_memory.py                 # 512 images x 8 views, calls of 4096 vs 256 inputs
    python benchmarks/views_memory.py --images 256 --rounds 3

Peak resident memory is measured in a fresh interpreter per call size (``ru_maxrss`` only grows);
speed with the call sizes taking turns in one interpreter, so that load from other work on the
cores hits both alike, as the ratio of the median times. The shipped model, ``samples/1377.png``
repeated, no input checks, ``workers=0``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from boneage.cli.arguments import non_negative, positive, whole_number
from boneage.defaults import MAX_VIEWS

SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "1377.png"


def answer(per_call: int, images: int, views: int) -> float:
    """Seconds for ``images`` copies of the sample, ``views`` views each, at most ``per_call`` inputs a model call."""
    import cv2

    import boneage.estimator
    from boneage import BoneAgeEstimator

    boneage.estimator.MAX_MODEL_INPUTS = per_call
    estimator = BoneAgeEstimator(views=views, check_input=False)
    image = cv2.imread(str(SAMPLE), cv2.IMREAD_GRAYSCALE)
    start = time.perf_counter()
    estimator.predict_many([image] * images, [True] * images, batch_size=images, workers=0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=positive, default=512)
    parser.add_argument("--views", type=whole_number(1, MAX_VIEWS), default=8)
    parser.add_argument("--per-call", type=positive, nargs=2, default=[4096, 256])
    parser.add_argument("--rounds", type=non_negative, default=0, help="also time the two call sizes taking turns")
    parser.add_argument("--peak", type=positive, help=argparse.SUPPRESS)  # the child: one call size, then its peak
    args = parser.parse_args()
    if args.rounds and args.images < 2:
        parser.error("--rounds times half of --images a turn: give --images 2 or more")
    if args.peak:
        import resource

        seconds = answer(args.peak, args.images, args.views)
        print(f"{args.peak} inputs a call: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB, "
              f"{seconds:.1f} s")
        return
    for per_call in args.per_call:
        subprocess.run([sys.executable, __file__, "--peak", str(per_call), "--images", str(args.images),
                        "--views", str(args.views)], check=True)
    if args.rounds:
        times: dict[int, list[float]] = {n: [] for n in args.per_call}
        for r in range(args.rounds):
            for n in args.per_call if r % 2 == 0 else args.per_call[::-1]:
                times[n].append(answer(n, args.images // 2, args.views))
        a, b = args.per_call
        print(f"seconds {times}; ratio of medians {b}/{a}: {np.median(times[b]) / np.median(times[a]):.2f}")


if __name__ == "__main__":
    main()
