"""Does a bfloat16-trained model predict as well, and does its float32 ONNX export predict what it does?

Fine-tune the same start in both precisions first (same seed, data and schedule), e.g.::

    for p in float32 mixed_bfloat16; do
      boneage train --data ../shared/data/rsna-100/labels.csv:../shared/data/rsna-100 --backbone densenet121 \\
        --input-size 100 --batch-size 64 --init-weights exported/boneage-densenet121-0.4.0.keras \\
        --learning-rate 1e-5 --epochs 1 --set warmup_epochs=0 --set steps_per_epoch=20 --set limit=1280 \\
        --set val_limit=320 --set data_pipeline=arrays --set jit_compile=false --set precision=$p \\
        --output /tmp/ft-$p
    done
    python benchmarks/precision_check.py /tmp/ft-float32 /tmp/ft-mixed_bfloat16 \\
        --start exported/boneage-densenet121-0.4.0.keras

Each run's ``best.keras`` is evaluated on its run's validation images (the fixed split, thinned by
``val_limit``), as is ``--start`` on the first run's; each run is then exported to ONNX (float32
whatever the training precision) and its ONNX predictions are compared with its Keras ones.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from boneage.cli.arguments import existing_file, existing_folder, require, usage_errors


def keras_months(path: Path, images: np.ndarray, male: np.ndarray, config: Any) -> np.ndarray:
    from boneage.training.train import load_saved

    model = load_saved(path, f"cannot measure {path}", config=config)  # the weights in the run's backbone
    return np.concatenate([np.asarray(model({"image": images[i : i + 64], "male": male[i : i + 64]}, training=False))
                           .reshape(-1) for i in range(0, len(images), 64)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=existing_folder, help="run folders")
    parser.add_argument("--start", type=existing_file, help="the .keras the runs started from, evaluated alike")
    args = parser.parse_args()
    for run in args.runs:
        require(parser, run / "config.json", run / "best.keras", hint="a training run's folder")

    from boneage.export.export import export_run, onnx_predict, preprocessed
    from boneage.training.config import load_config
    from boneage.training.data import prepare_data

    with usage_errors(parser):  # a config that does not read
        configs = [load_config(run / "config.json") for run in args.runs]
    rows = []
    for i, (run, config) in enumerate(zip(args.runs, configs, strict=True)):
        with usage_errors(parser):  # its data is not there
            _, val = prepare_data(config)
        images, male, ages = preprocessed(val, config)
        if i == 0 and args.start:
            start = keras_months(args.start, images, male, config)
            rows.append({"model": str(args.start), "images": len(ages), "keras_mae": float(np.abs(start - ages).mean())})
        months = keras_months(run / "best.keras", images, male, config)
        with tempfile.TemporaryDirectory() as out:
            (entry,) = export_run(run, "0.0.1", Path(out), with_keras=False)
            onnx = onnx_predict((Path(out) / entry.file).read_bytes(), images, male)
        rows.append({
            "model": str(run), "precision": config.precision, "images": len(ages),
            "keras_mae": float(np.abs(months - ages).mean()), "onnx_mae": float(np.abs(onnx - ages).mean()),
            "onnx_vs_keras_max_abs": float(np.abs(onnx - months).max()),
            "onnx_vs_keras_mean_abs": float(np.abs(onnx - months).mean()),
        })
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
