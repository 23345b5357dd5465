"""Resident memory over many predictions with one shared estimator (8 threads).

    python benchmarks/memory.py [--model REF] --predictions 5000

Prints RSS every 500 predictions; a flat line means no leak.
"""

from __future__ import annotations

import argparse
import resource
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from boneage.cli.arguments import positive, usage_errors


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model")
    parser.add_argument("--predictions", type=positive, default=5000)
    parser.add_argument("--threads", type=positive, default=8)
    args = parser.parse_args()

    from boneage import BoneAgeEstimator

    with usage_errors(parser):  # a model that is not there
        est = BoneAgeEstimator(args.model)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 200, (400, 320), dtype=np.uint8) for _ in range(20)]
    print(f"model {est.card.ref}; RSS after loading: {rss_mb():.1f} MB")
    print("| predictions | RSS MB |\n|---|---|")
    done = 0
    with ThreadPoolExecutor(args.threads) as pool:
        while done < args.predictions:
            list(pool.map(lambda k: est.predict(images[k % 20], k % 2 == 0), range(done, done + 500)))
            done += 500
            print(f"| {done} | {rss_mb():.1f} |", flush=True)


if __name__ == "__main__":
    main()
