"""Would the mean of several trained models be steadier, or more accurate, than each? For ``.keras`` models of one
preprocessing (a run's ``best.keras`` or a release's ``.keras``): on the 76 rsna-512 validation radiographs, each
model's MAE and its mean and largest answer change under issue 18's target perturbations (JPEG 90, 1-px crops,
rescaling; the radiograph of the largest named), the same for the mean of their answers, and how their errors
correlate.

    BONEAGE_DATA=../shared/data python benchmarks/ensemble.py ../runs/RUN/config.json A.keras B.keras [...]

Models of one lineage (warm restarts of one another) err alike, and averaging them removes little; the question
is worth asking of models trained apart (issue 14's s17 against 0.5.0).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from robustness import GROUPS, TARGETS, Perturb, validation_images

from boneage.cli.arguments import DATA_HINT, require, usage_errors
from boneage.modelcard import IMAGE_INPUT, SEX_INPUT
from boneage.preprocess import build_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", type=Path, help="a run's config.json, for the preprocessing all the models share")
    parser.add_argument("models", type=Path, nargs="+", help=".keras models (a run's best.keras, a release's .keras)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("BONEAGE_DATA", "../shared/data")))
    args = parser.parse_args()
    require(parser, args.config, *args.models)
    require(parser, args.data / "rsna-512" / "labels.csv", hint=DATA_HINT)

    from boneage.training.config import load_config
    from boneage.training.train import load_saved

    with usage_errors(parser):
        config = load_config(args.config)
        pipeline = build_pipeline(config.resolved_preprocessing())
        models = [load_saved(path, f"cannot measure {path}", config=config) for path in args.models]
    images = validation_images(args.data)
    ids = [image_id for image_id, *_ in images]
    male = np.array([[m] for _, _, m, _ in images], np.float32)
    ages = np.array([age for *_, age in images])

    def answers(perturb: Perturb | None = None) -> np.ndarray:
        """(models + 1, images): each model's answers, then their mean."""
        x = np.stack([pipeline(perturb(image) if perturb else image) for _, image, _, _ in images])
        each = np.stack([np.asarray(m.predict({IMAGE_INPUT: x, SEX_INPUT: male}, verbose=0, batch_size=64)).ravel()
                         for m in models])
        return np.vstack([each, each.mean(0)])

    base = answers()
    names = [f"{p.parent.name}/{p.name}" for p in args.models] + ["mean of the models"]
    cells: list[list[str]] = [[f"{np.abs(b - ages).mean():.2f}"] for b in base]
    for target in TARGETS:
        change = np.concatenate([np.abs(answers(perturb) - base) for perturb in GROUPS[target]], axis=1)
        for row, c in zip(cells, change, strict=True):
            row.append(f"{c.mean():.2f} / {c.max():.2f} (id {ids[int(np.argmax(c)) % len(ids)]})")
    print(f"{len(images)} validation radiographs of rsna-512\n")
    print("| model | MAE | " + " | ".join(f"{t}: mean / max" for t in TARGETS) + " |")
    print("|---|---|" + "---|" * len(TARGETS))
    for name, row in zip(names, cells, strict=True):
        print(f"| {name} | " + " | ".join(row) + " |")
    if len(models) > 1:
        print("\ncorrelation of the models' errors:", np.corrcoef(base[:-1] - ages).round(3).tolist())


if __name__ == "__main__":
    main()
