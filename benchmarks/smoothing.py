"""Does averaging the model over fixed draws of Gaussian noise on its input steady the answers that JPEG 90,
1-px crops and rescaling still move by 3-4 months (issue 18)? The model is steep around a few radiographs
(``input_sensitivity.py``); averaging over noise of standard deviation ``sigma`` answers with the model
smoothed at that scale, at K times its work.

    BONEAGE_DATA=../shared/data python benchmarks/smoothing.py [MODEL] --draws 0 8 16 --sigma 0.02 0.04

On the validation ids of rsna-512 (never trained on), for the given model (default: the shipped one): per
setting (K draws at sigma, the same K draws for every image and perturbation; 0: the model as it is), the
mean and largest change of the answer under the three target perturbations of ``robustness.py``, the MAE,
and the milliseconds per image of the model's runs alone.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
from robustness import GROUPS, TARGETS, validation_images

from boneage import BoneAgeEstimator
from boneage.cli.arguments import DATA_HINT, require, usage_errors


def smoothed(estimator: BoneAgeEstimator, inputs: list[np.ndarray], male: list[bool], draws: int,
             sigma: float) -> tuple[np.ndarray, float]:
    """Each preprocessed input's answer averaged over ``draws`` fixed noise draws (0: the plain answer), and the
    seconds the model took."""
    noise = np.random.default_rng(12345).normal(0, sigma, (max(draws, 1), *inputs[0].shape[1:])).astype(np.float32)
    answers, seconds = [], 0.0
    for x, m in zip(inputs, male, strict=True):
        batch = x if not draws else x + noise
        started = time.perf_counter()
        answers.append(float(estimator.run(batch, [m] * len(batch)).mean()))
        seconds += time.perf_counter() - started
    return np.array(answers), seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("BONEAGE_DATA", "../shared/data")))
    parser.add_argument("--draws", type=int, nargs="+", default=[0, 8, 16])
    parser.add_argument("--sigma", type=float, nargs="+", default=[0.02, 0.04])
    args = parser.parse_args()
    require(parser, args.data / "rsna-512" / "labels.csv", hint=DATA_HINT)
    with usage_errors(parser):
        estimator = BoneAgeEstimator(args.model, check_input=False)
    images = validation_images(args.data)
    male = [m for _, _, m, _ in images]
    ages = np.array([a for *_, a in images])
    base_inputs = [estimator.model_inputs(image)[0] for _, image, _, _ in images]
    perturbed = {name: [[estimator.model_inputs(p(image))[0] for _, image, _, _ in images] for p in GROUPS[name]]
                 for name in TARGETS}
    print(f"{estimator.card.name} {estimator.card.version}, {len(images)} validation radiographs of rsna-512\n")
    print("| draws, sigma | " + " | ".join(f"{n}: mean / max" for n in TARGETS) + " | MAE | model ms per image |")
    print("|---|" + "---|" * (len(TARGETS) + 2))
    settings = [(0, 0.0)] * (0 in args.draws) + [(k, s) for k in args.draws if k for s in args.sigma]
    for draws, sigma in settings:
        base, seconds = smoothed(estimator, base_inputs, male, draws, sigma)
        cells = []
        for name in TARGETS:
            change = np.concatenate([np.abs(smoothed(estimator, inputs, male, draws, sigma)[0] - base)
                                     for inputs in perturbed[name]])
            mark = " *" if change.mean() > 1 or change.max() > 3 else ""
            cells.append(f"{change.mean():.2f} / {change.max():.2f}{mark}")
        label = f"{draws}, {sigma:g}" if draws else "none"
        print(f"| {label} | " + " | ".join(cells) +
              f" | {np.abs(base - ages).mean():.2f} | {1000 * seconds / len(images):.0f} |")
    print("\n* misses issue 18's target (mean <= 1, max <= 3 months)")


if __name__ == "__main__":
    main()
