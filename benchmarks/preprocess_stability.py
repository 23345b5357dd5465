"""How far the preprocessed input itself moves under issue 18's target perturbations, for several
preprocessing configs: no model, so it measures what a config hands any model to be unstable about.

    BONEAGE_DATA=../shared/data python benchmarks/preprocess_stability.py

On the 76 validation radiographs of rsna-512, for each config: the mean absolute change of the
[0, 1] input between the unchanged and the perturbed image (mean over images, and the largest
image's mean), and the largest 99.5th percentile of a pixel's change (local jumps: a CLAHE tile
whose mapping flipped shows here, not in the mean). Perturbations as in ``robustness.py``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from robustness import crop, jpeg, rescale, validation_images

from boneage.cli.arguments import DATA_HINT, require
from boneage.preprocess import PreprocessConfig, build_pipeline
from boneage.preprocess.config import StepConfig


def config(clahe: dict[str, float] | None, interpolation: str = "area") -> PreprocessConfig:
    """grayscale, stretch to 100 px, optional CLAHE, [0, 1]: the shipped steps with one part varied."""
    steps = [StepConfig(name="grayscale"),
             StepConfig(name="resize", params={"size": 100, "mode": "stretch", "interpolation": interpolation})]
    if clahe is not None:
        steps.append(StepConfig(name="clahe", params=clahe))
    return PreprocessConfig(steps=(*steps, StepConfig(name="normalize")))


CONFIGS = {
    "area, CLAHE 8x8 tiles (0.4.0's card)": config({"tile_grid": 8}),
    "nearest_exact, CLAHE 8x8 (0.3.0's card)": config({"tile_grid": 8}, "nearest_exact"),
    "area, CLAHE 8x8, clip 1": config({"tile_grid": 8, "clip_limit": 1.0}),
    "area, CLAHE 4x4": config({"tile_grid": 4}),
    "area, CLAHE 2x2": config({"tile_grid": 2}),
    "area, no CLAHE": config(None),
}
PERTURBATIONS = {
    "JPEG 90": [jpeg(90)],
    "crop 1 px": [crop(e, 1) for e in ("top", "bottom", "left", "right")],
    "rescale 0.5-1.5x": [rescale(f) for f in (0.5, 0.75, 1.25, 1.5)],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("BONEAGE_DATA", "../shared/data")))
    args = parser.parse_args()
    require(parser, args.data / "rsna-512" / "labels.csv", hint=DATA_HINT)
    images = [image for _, image, _, _ in validation_images(args.data)]
    print(f"{len(images)} validation radiographs of rsna-512; each cell: mean / largest image's mean "
          "absolute change of the input, and the largest 99.5th-percentile pixel change\n")
    print("| config | " + " | ".join(PERTURBATIONS) + " |")
    print("|---|" + "---|" * len(PERTURBATIONS))
    for name, cfg in CONFIGS.items():
        pipeline = build_pipeline(cfg)
        base = [np.asarray(pipeline(image), np.float32) for image in images]
        cells = []
        for perturbs in PERTURBATIONS.values():
            diffs = [np.abs(np.asarray(pipeline(p(image)), np.float32) - b)
                     for p in perturbs for image, b in zip(images, base, strict=True)]
            means = np.array([d.mean() for d in diffs])
            local = max(float(np.percentile(d, 99.5)) for d in diffs)
            cells.append(f"{means.mean():.4f} / {means.max():.4f}, {local:.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
