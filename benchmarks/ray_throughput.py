"""The same full-size files scored by the local engine and by the Ray engine on a local Ray.

    BONEAGE_DATA=../shared/data python benchmarks/ray_throughput.py [MODEL] --copies 4 --cpus 2

Needs the ray extra. Times the local engine (``predict_many``, default prepare-ahead threads),
starting a local Ray, and two Ray runs (each starts its actors and loads the model in them: the
first run also pays for importing Ray Data), and says whether every run gave the same rows.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from boneage.cli.arguments import pngs, positive, usage_errors
from boneage.extras import require


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("BONEAGE_DATA", "../shared/data")))
    parser.add_argument("--copies", type=positive, default=4)
    parser.add_argument("--cpus", type=positive, default=2, help="the local Ray's CPUs, and its actors")
    parser.add_argument("--batch-size", type=positive, default=16)
    args = parser.parse_args()
    originals = pngs(parser, args.data / "radiographs")
    with usage_errors(parser):  # the extra not installed, a model that is not there
        ray = require("ray", 'pip install "boneage[ray]"', "the Ray engine")

        from boneage import BoneAgeEstimator
        from boneage.cli.results import flat
        from boneage.engines.ray import predict_files, result

        estimator = BoneAgeEstimator(args.model)
    files = [str(f) for f in originals * args.copies]
    male = [True] * len(files)
    estimator.predict_many(originals[:2], [True, True])  # warm-up, as for the Ray runs' second pass
    print(f"{estimator.card.ref}, {len(files)} full-size radiographs, batch {args.batch_size}, {os.cpu_count()} cores\n")
    print("| run | seconds | radiographs/s | same rows |\n|---|---|---|---|")
    t = time.perf_counter()
    local = [flat(result(f, o)) for f, o in zip(files, estimator.predict_many(files, male, args.batch_size), strict=True)]
    seconds = time.perf_counter() - t
    print(f"| local engine | {seconds:.1f} | {len(files) / seconds:.1f} | - |")
    t = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    print(f"| start a local Ray | {time.perf_counter() - t:.1f} | | |")
    try:
        for run in ("first", "second"):
            t = time.perf_counter()
            rows = predict_files(files, male, model=args.model, actors=args.cpus, batch_size=args.batch_size)
            seconds = time.perf_counter() - t
            print(f"| Ray engine, {run} run, {args.cpus} actors | {seconds:.1f} | {len(files) / seconds:.1f} | "
                  f"{'yes' if rows == local else 'NO'} |")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
