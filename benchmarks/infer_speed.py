"""CPU latency and throughput of exported models on ONNX Runtime, measured in one run.

    python benchmarks/infer_speed.py [MODEL ...] --threads 2

Each model (registry refs or paths; default: every registered model) runs batch 1 and batch 16
on the same random inputs; the table gives median ms and the speed-up against the first model.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

import numpy as np

from boneage.cli.arguments import positive, usage_errors

if TYPE_CHECKING:
    from boneage import BoneAgeEstimator


def timed(estimator: BoneAgeEstimator, batch: int, repeats: int) -> float:
    size = estimator.card.input_size
    images = np.random.default_rng(0).random((batch, size, size, 1), np.float32)
    male = [True] * batch
    estimator.run(images, male)
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        estimator.run(images, male)
        samples.append(time.perf_counter() - t)
    return 1000 * float(np.median(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("models", nargs="*")
    parser.add_argument("--threads", type=positive, default=None)
    parser.add_argument("--repeats", type=positive, default=30)
    args = parser.parse_args()

    from boneage import BoneAgeEstimator
    from boneage.models import load_registry

    with usage_errors(parser):  # a damaged registry, a model that is not there
        refs = args.models or [e.ref for e in load_registry().models]
        estimators = [BoneAgeEstimator(ref, threads=args.threads) for ref in refs]
    print("| model | MB | batch 1 ms | batch 16 ms | images/s | speed-up vs first |")
    print("|---|---|---|---|---|---|")
    first = None
    for est in estimators:
        one, many = timed(est, 1, args.repeats), timed(est, 16, max(3, args.repeats // 5))
        first = first or one
        print(f"| {est.card.ref}{' int8' if 'int8' in est.path.name else ''} | {len(est.model.data) / 1e6:.1f} | "
              f"{one:.1f} | {many:.1f} | {16000 / many:.0f} | {first / one:.2f} |", flush=True)


if __name__ == "__main__":
    main()
