"""Is a large change in the estimate the input's doing or the model's? For a training run's
``best.keras``: per perturbation of the robustness benchmark, the mean change of the model's input
(after preprocessing, on its [0, 1] scale) beside the mean and largest change of its answer, and the
answer's spread under Gaussian noise of half, one and two grey levels added to the input itself.

    BONEAGE_DATA=../shared/data python benchmarks/input_sensitivity.py ../runs/RUN

A model whose answer moves by months for an input change of a thousandth is the cause, whatever
the resize does (issue 18); ``augment.noise`` in training is the measured remedy.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from robustness import GROUPS, TARGETS, validation_images

from boneage.cli.arguments import DATA_HINT, existing_folder, require, usage_errors
from boneage.modelcard import IMAGE_INPUT, SEX_INPUT
from boneage.preprocess import build_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=existing_folder, help="a training run's folder (its config.json and best.keras)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("BONEAGE_DATA", "../shared/data")))
    args = parser.parse_args()
    require(parser, args.run / "config.json", args.run / "best.keras", hint="a training run's folder")
    require(parser, args.data / "rsna-512" / "labels.csv", hint=DATA_HINT)

    from boneage.training.config import load_config
    from boneage.training.train import load_saved

    with usage_errors(parser):  # a config that does not read, a best.keras that does not load
        pipeline = build_pipeline(load_config(args.run / "config.json").resolved_preprocessing())
        model = load_saved(args.run / "best.keras", f"cannot measure {args.run}")
    images = validation_images(args.data)
    male = np.array([[m] for _, _, m, _ in images], np.float32)

    def answer(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict({IMAGE_INPUT: x, SEX_INPUT: male}, verbose=0, batch_size=64)).ravel()

    base_x = np.stack([pipeline(image) for _, image, _, _ in images])
    base = answer(base_x)
    ages = np.array([a for *_, a in images])
    print(f"{args.run.name}: {len(images)} validation radiographs of rsna-512, MAE {np.abs(base - ages).mean():.2f}\n")
    print("| perturbation | input change (mean) | answer change: mean / max |\n|---|---|---|")
    for name in TARGETS:
        dx, d = [], []
        for perturb in GROUPS[name]:
            x = np.stack([pipeline(perturb(image)) for _, image, _, _ in images])
            dx.append(np.abs(x - base_x).mean())
            d.append(np.abs(answer(x) - base))
        change = np.concatenate(d)
        print(f"| {name} | {np.mean(dx):.4f} | {change.mean():.2f} / {change.max():.2f} |")
    rng = np.random.default_rng(0)
    for grey in (0.5, 1, 2):
        d = np.concatenate([np.abs(answer(base_x + rng.normal(0, grey / 255, base_x.shape).astype(np.float32)) - base)
                            for _ in range(4)])
        print(f"| Gaussian noise, {grey} grey level | {grey / 255 * np.sqrt(2 / np.pi):.4f} | {d.mean():.2f} / {d.max():.2f} |")


if __name__ == "__main__":
    main()
