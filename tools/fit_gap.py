"""How much of a trained model's error is fit and how much is generalization (issue 14): its MAE on
a seeded sample of training images, preprocessed as at inference (no augmentation, no noise),
against its MAE on the run's validation split.

    python tools/fit_gap.py RUN/best.keras --run RUN [--images 2000]

A training MAE well under the validation MAE says the model has learnt more than it can carry to
unseen hands (more epochs fit the training set further); equal ones say it is still under-fitted.
"""

from __future__ import annotations

import argparse
import random

import numpy as np

from boneage.cli.arguments import existing_file, existing_folder, positive, require, usage_errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=existing_file, help="a trained .keras")
    parser.add_argument("--run", type=existing_folder, required=True, help="the run folder with its config.json")
    parser.add_argument("--images", type=positive, default=2000, help="training images (default 2000)")
    args = parser.parse_args()
    require(parser, args.run / "config.json")

    from boneage.preprocess import build_pipeline
    from boneage.training.arrays import load_arrays
    from boneage.training.config import load_config
    from boneage.training.data import prepare_data
    from boneage.training.train import load_saved

    with usage_errors(parser):  # a config or data that does not load
        config = load_config(args.run / "config.json")
        train, val = prepare_data(config)
        model = load_saved(args.model, f"{args.model} cannot be loaded")
    random.Random(0).shuffle(train)
    pipeline = build_pipeline(config.resolved_preprocessing())
    for name, records in ((f"train ({min(args.images, len(train))} of {len(train)})", train[: args.images]),
                          (f"validation ({len(val)})", val)):
        arrays = load_arrays(records, pipeline, config.workers)
        predicted = model.predict({"image": arrays.images, "male": arrays.male}, batch_size=128, verbose=0)
        error = predicted.reshape(-1) - arrays.ages.reshape(-1)
        print(f"{args.model} on {name}: MAE {np.abs(error).mean():.2f} months, bias {error.mean():+.2f}")


if __name__ == "__main__":
    main()
