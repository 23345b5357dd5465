"""Recompute a trained model's batch-norm statistics over training images, and say what that
does to its validation MAE (issue 14; training does it itself with ``bn_recalibration``).

    python tools/recalibrate_bn.py RUN/best.keras --run RUN --images 2048 [--clean] [--output OUT.keras]

RUN is the run folder whose ``config.json`` names the data, the split, the preprocessing and the
augmentation; the images are the seeded sample that ``bn_recalibration`` takes, augmented as in
training (``--clean``: preprocessed as at inference, no augmentation), and the validation MAE is
measured on the whole validation split, before and after. With ``--output`` the recalibrated
model is written there (never over an existing file).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from boneage.cli.arguments import new_file, positive, usage_errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, help="a trained .keras")
    parser.add_argument("--run", type=Path, required=True, help="the run folder with its config.json")
    parser.add_argument("--images", type=positive, default=2048, help="training images (default 2048)")
    parser.add_argument("--clean", action="store_true", help="without augmentation")
    parser.add_argument("--output", type=new_file, help="write the recalibrated model here")  # dangling links too
    args = parser.parse_args()
    if not (args.run / "config.json").is_file() or not args.model.is_file():
        parser.error(f"needs a run folder with its config.json ({args.run}) and a .keras model ({args.model})")

    from boneage.preprocess import build_pipeline
    from boneage.training.arrays import load_arrays
    from boneage.training.batchnorm import recalibrate
    from boneage.training.config import Augment, load_config
    from boneage.training.data import prepare_data
    from boneage.training.train import load_saved, recalibration

    with usage_errors(parser):  # a config that does not read, data that is not there, not a .keras model
        config = load_config(args.run / "config.json").model_copy(update={"bn_recalibration": args.images})
        if args.clean:
            config = config.model_copy(update={"augment": Augment(rotation_deg=0, shift=0, zoom=0, brightness=0,
                                                                  contrast=0)})
        train, val = prepare_data(config)
        model = load_saved(args.model, f"cannot recalibrate {args.model}")
    (callback,) = recalibration(config, train)
    validation = load_arrays(val, build_pipeline(config.resolved_preprocessing()), config.workers)

    def mae() -> float:
        inputs = {"image": validation.images, "male": validation.male}
        return float(np.abs(model.predict(inputs, batch_size=128, verbose=0).reshape(-1) - validation.ages.reshape(-1)).mean())

    before = mae()
    layers = recalibrate(model, callback.images, callback.male, config.batch_size)
    kind = "clean" if args.clean else "augmented"
    print(f"{args.model}: validation MAE {before:.2f} -> {mae():.2f} months ({len(validation)} images), "
          f"{layers} batch-norm layers recalibrated on {len(callback.images)} {kind} training images")
    if args.output is not None:
        model.save(args.output)
        print(f"written {args.output}")


if __name__ == "__main__":
    main()
