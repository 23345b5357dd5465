"""Training throughput of the options that could matter, side by side, on this machine.

    BONEAGE_DATA=../shared/data python benchmarks/train_speed.py --steps 8
    BONEAGE_DATA=../shared/data python benchmarks/train_speed.py --only baseline torch-arrays-32

Each option runs in a fresh interpreter (the Keras backend and the thread pools are fixed at
start-up): DenseNet121 at 100 px on real rsna-100 images, through ``model.fit`` with the run's
real data path (tf.data or in-memory arrays, with augmentation). Images/s is timed from the end
of the warm-up batches (graph tracing, XLA compilation) to the end of the last one, and each
option is shown as a ratio to today's recipe (``baseline``), measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# name: (KERAS_BACKEND, config changes, extra environment)
OPTIONS: dict[str, tuple[str, dict[str, Any], dict[str, str]]] = {
    "baseline": ("tensorflow", {"data_pipeline": "tf.data", "batch_size": 32}, {}),
    "tf-arrays-32": ("tensorflow", {"data_pipeline": "arrays", "batch_size": 32}, {}),
    "tf-data-64": ("tensorflow", {"data_pipeline": "tf.data", "batch_size": 64}, {}),
    "tf-arrays-64": ("tensorflow", {"data_pipeline": "arrays", "batch_size": 64}, {}),
    "tf-arrays-64-no-xla": ("tensorflow", {"data_pipeline": "arrays", "batch_size": 64, "jit_compile": False}, {}),
    "tf-data-32-no-xla": ("tensorflow", {"data_pipeline": "tf.data", "batch_size": 32, "jit_compile": False}, {}),
    "tf-data-32-xla": ("tensorflow", {"data_pipeline": "tf.data", "batch_size": 32, "jit_compile": True}, {}),
    "tf-data-32-threads-2-1": ("tensorflow", {"data_pipeline": "tf.data", "batch_size": 32},
                               {"TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1"}),
    "tf-data-32-threads-1-2": ("tensorflow", {"data_pipeline": "tf.data", "batch_size": 32},
                               {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "2"}),
    "torch-arrays-32": ("torch", {"batch_size": 32}, {}),
    "torch-arrays-64": ("torch", {"batch_size": 64}, {}),
    "jax-arrays-32": ("jax", {"batch_size": 32}, {}),
}


def measure(data: Path, changes: dict[str, Any], warm: int, steps: int) -> dict[str, Any]:
    import keras

    from boneage.training.config import TrainConfig
    from boneage.training.data import prepare_data
    from boneage.training.train import build_and_compile, datasets

    batch = int(changes["batch_size"])
    config = TrainConfig.model_validate({
        "backbone": "densenet121", "input_size": 100, "limit": batch * (warm + steps), "val_limit": 8,
        "sources": [{"labels": str(data / "rsna-100/labels.csv"), "images": str(data / "rsna-100")}], **changes,
    })
    train, val = prepare_data(config)
    count, epoch_batches, _ = datasets(config, train, val)
    model = build_and_compile(config, train, warm + steps)
    ends: list[float] = []
    clock = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter()))
    model.fit(epoch_batches(0), epochs=1, verbose=0, callbacks=[clock])
    seconds = ends[-1] - ends[warm - 1]
    return {"backend": keras.backend.backend(), "images_per_s": steps * batch / seconds,
            "warmup_s": ends[warm - 1] - ends[0], "batches": len(ends)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("BONEAGE_DATA", "../shared/data")))
    parser.add_argument("--only", nargs="+", choices=sorted(OPTIONS), help="these options (baseline is always run)")
    parser.add_argument("--warm", type=int, default=2, help="untimed batches first")
    parser.add_argument("--steps", type=int, default=8, help="timed batches")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.data, json.loads(args.child), args.warm, args.steps)))
        return

    names = ["baseline", *[n for n in (args.only or OPTIONS) if n != "baseline"]]
    root = Path(__file__).parent.parent
    print("| option | backend | data path | batch | images/s | vs baseline | warm-up s |")
    print("|---|---|---|---|---|---|---|")
    base = None
    for name in names:
        backend, changes, env = OPTIONS[name]
        cmd = [sys.executable, __file__, "--data", str(args.data), "--warm", str(args.warm), "--steps",
               str(args.steps), "--child", json.dumps(changes)]
        out = subprocess.run(cmd, cwd=root, capture_output=True, text=True,
                             env={**os.environ, "KERAS_BACKEND": backend, **env})
        if out.returncode != 0:
            print(f"| {name} | {backend} | failed: {out.stderr.strip().splitlines()[-1:]} | | | | |", flush=True)
            continue
        result = json.loads(out.stdout.strip().splitlines()[-1])
        base = base or result["images_per_s"]
        path = changes.get("data_pipeline", "arrays")
        print(f"| {name} | {result['backend']} | {path} | {changes['batch_size']} | {result['images_per_s']:.1f} | "
              f"{result['images_per_s'] / base:.2f} | {result['warmup_s']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
