"""Does the resize of the higher-resolution images (b) match how rsna-100 was made, and does it matter?

    BONEAGE_DATA=../shared/data python benchmarks/resize_match.py RUN/best.keras

On the validation ids of rsna-512 (never trained on): the Keras model's MAE on their rsna-100
copies and on the 512-px images through the recipe's steps (grayscale, stretch to 100 px, CLAHE
on 2x2 tiles, normalize) with each interpolation; then how close each interpolation's 100-px
downsample of a 512-px image comes to its rsna-100 copy (mean absolute difference, grey levels).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from robustness import validation_images  # noqa: E402

from boneage.cli.arguments import DATA_HINT, existing_file, require, usage_errors  # noqa: E402
from boneage.preprocess import PreprocessConfig, build_pipeline  # noqa: E402
from boneage.preprocess.builtin import INTERPOLATIONS  # noqa: E402


def recipe(interpolation: str) -> PreprocessConfig:
    return PreprocessConfig.model_validate({"steps": [
        {"name": "grayscale"},
        {"name": "resize", "params": {"size": 100, "mode": "stretch", "interpolation": interpolation}},
        {"name": "clahe", "params": {"tile_grid": 2}},
        {"name": "normalize"}]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=existing_file, help="a run's .keras")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("BONEAGE_DATA", "../shared/data")))
    args = parser.parse_args()
    require(parser, *(args.data / folder / "labels.csv" for folder in ("rsna-512", "rsna-100")), hint=DATA_HINT)

    from boneage.training.train import load_saved

    with usage_errors(parser):  # not a .keras model
        model = load_saved(args.model, f"cannot measure {args.model}")
    images = validation_images(args.data)
    small = {i: cv2.imread(str(args.data / "rsna-100" / f"{i}.png"), cv2.IMREAD_UNCHANGED) for i, *_ in images}
    male = np.array([[float(m)] for _, _, m, _ in images], np.float32)
    ages = np.array([a for *_, a in images])
    print(f"{len(images)} validation ids of rsna-512\n\n| input | resize | MAE | bias |\n|---|---|---|---|")
    cases = [("rsna-100 copies", "area", [small[i] for i, *_ in images])]
    cases += [("512 px", name, [image for _, image, _, _ in images]) for name in ("area", "nearest_exact", "linear")]
    for what, interpolation, pictures in cases:
        pipeline = build_pipeline(recipe(interpolation))
        x = np.stack([pipeline(p) for p in pictures]).astype(np.float32)
        pred = np.asarray(model.predict([x, male], verbose=0)).reshape(-1)
        print(f"| {what} | {interpolation} | {np.abs(pred - ages).mean():.2f} | {np.mean(pred - ages):+.2f} |")
    print("\n| interpolation | mean abs difference to the rsna-100 copy |\n|---|---|")
    for name in ("nearest_exact", "area", "linear", "cubic"):
        diffs = [np.abs(cv2.resize(image, (100, 100), interpolation=INTERPOLATIONS[name]).astype(float) - small[i]).mean()
                 for i, image, _, _ in images]
        print(f"| {name} | {np.mean(diffs):.2f} |")


if __name__ == "__main__":
    main()
