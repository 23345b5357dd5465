"""Training throughput of the options that could matter, side by side, on this machine.

    BONEAGE_DATA=../shared/data python benchmarks/train_speed.py --steps 8
    BONEAGE_DATA=../shared/data python benchmarks/train_speed.py --only baseline torch-arrays-32
    BONEAGE_DATA=../shared/data python benchmarks/train_speed.py --interleave --rounds 20 \
        --only tf-arrays-64-no-xla tf-arrays-64-no-xla-bf16

Each option runs in a fresh interpreter (the Keras backend and the thread pools are fixed at
start-up): DenseNet121 at 100 px on real rsna-100 images, through ``model.fit`` with the run's
real data path (tf.data or in-memory arrays, with augmentation). Images/s is timed from the end
of the warm-up batches (graph tracing, XLA compilation) to the end of the last one, and each
option is shown as a ratio to today's recipe (``baseline``), measured in the same run.

``--interleave`` runs TensorFlow options in one interpreter instead, taking turns batch by batch:
each round trains every model on 64 images, in rotating order, and the ratio to the baseline is
taken round by round, so that load from other work on the cores hits both sides of a ratio alike
(the ``--warm`` first rounds, with tracing and XLA compilation, are not timed).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from boneage.cli.arguments import DATA_HINT, positive, require

# name: (KERAS_BACKEND, config changes, extra environment)
OPTIONS: dict[str, tuple[str, dict[str, Any], dict[str, str]]] = {
    "baseline": ("tensorflow", {"data_pipeline": "tf.data", "batch_size": 32}, {}),
    "tf-arrays-32": ("tensorflow", {"data_pipeline": "arrays", "batch_size": 32}, {}),
    "tf-data-64": ("tensorflow", {"data_pipeline": "tf.data", "batch_size": 64}, {}),
    "tf-arrays-64": ("tensorflow", {"data_pipeline": "arrays", "batch_size": 64}, {}),
    "tf-arrays-64-no-xla": ("tensorflow", {"data_pipeline": "arrays", "batch_size": 64, "jit_compile": False}, {}),
    "tf-arrays-64-no-xla-bf16": ("tensorflow", {"data_pipeline": "arrays", "batch_size": 64, "jit_compile": False,
                                                "precision": "mixed_bfloat16"}, {}),
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

    from boneage.training.data import prepare_data
    from boneage.training.train import build_and_compile, datasets

    batch = int(changes["batch_size"])
    config = _config(data, changes, batch * (warm + steps))
    train, val = prepare_data(config)
    count, epoch_batches, _ = datasets(config, train, val)
    model = build_and_compile(config, train, warm + steps)
    ends: list[float] = []
    clock = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter()))
    model.fit(epoch_batches(0), epochs=1, verbose=0, callbacks=[clock])
    seconds = ends[-1] - ends[warm - 1]
    return {"backend": keras.backend.backend(), "images_per_s": steps * batch / seconds,
            "warmup_s": ends[warm - 1] - ends[0], "batches": len(ends)}


def _config(data: Path, changes: dict[str, Any], limit: int) -> Any:
    from boneage.training.config import TrainConfig

    return TrainConfig.model_validate({
        "backbone": "densenet121", "input_size": 100, "limit": limit, "val_limit": 8,
        "sources": [{"labels": str(data / "rsna-100/labels.csv"), "images": str(data / "rsna-100")}], **changes,
    })


def _endless(epoch_batches: Any) -> Iterator[tuple[Any, ...]]:
    """The run's training batches, epoch after epoch, from either data path."""
    import keras

    for epoch in itertools.count():
        source = epoch_batches(epoch)
        if isinstance(source, keras.utils.PyDataset):
            yield from (source[i] for i in range(len(source)))
        else:
            yield from source


def interleave(data: Path, names: list[str], warm: int, rounds: int, steps: int) -> dict[str, list[float]]:
    """Images/s of each option in each timed round. A round trains each model on 64 images (one
    batch of 64, two of 32), one model after the other in rotating order, so that load from other
    work lands on every option alike; the images cycle through a pool of ``steps`` batches of 64.
    ``train_on_batch`` runs the step ``fit`` compiles, on batches from the run's own data path
    (taken in the loop: the array path's worker threads do not prefetch here, about 1% of a step)."""
    from boneage.training.data import prepare_data
    from boneage.training.train import build_and_compile, datasets

    runs = {}
    for name in names:
        config = _config(data, OPTIONS[name][1], 64 * steps)
        train, val = prepare_data(config)
        _, epoch_batches, _ = datasets(config, train, val)
        model = build_and_compile(config, train, (warm + rounds) * 64 // config.batch_size)
        runs[name] = (model, _endless(epoch_batches), config.batch_size)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warm + rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            model, batches, batch = runs[name]
            start = time.perf_counter()
            for _ in range(64 // batch):
                model.train_on_batch(*next(batches))
            if round_ >= warm:  # the first rounds trace and compile (XLA for the baseline)
                rates[name].append(64 // batch * batch / (time.perf_counter() - start))
    return rates


def interleaved_table(args: argparse.Namespace, names: list[str], root: Path) -> None:
    for name in names:
        if OPTIONS[name][0] != "tensorflow" or OPTIONS[name][2]:
            raise SystemExit(f"--interleave takes TensorFlow options without their own environment, not {name}")
    cmd = [sys.executable, __file__, "--data", str(args.data), "--warm", str(args.warm), "--rounds", str(args.rounds),
           "--steps", str(args.steps), "--child-interleave", json.dumps(names)]
    out = subprocess.run(cmd, cwd=root, capture_output=True, text=True,
                         env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    rates = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(rates))
    print("| option | data path | batch | XLA | precision | images/s (median) | vs baseline (median of rounds) | range |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        changes = OPTIONS[name][1]
        ratios = [a / b for a, b in zip(rates[name], rates["baseline"], strict=True)]
        print(f"| {name} | {changes.get('data_pipeline', 'arrays')} | {changes['batch_size']} | "
              f"{changes.get('jit_compile', 'auto')} | {changes.get('precision', 'float32')} | "
              f"{statistics.median(rates[name]):.1f} | {statistics.median(ratios):.2f} | "
              f"{min(ratios):.2f}-{max(ratios):.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("BONEAGE_DATA", "../shared/data")))
    parser.add_argument("--only", nargs="+", choices=sorted(OPTIONS), help="these options (baseline is always run)")
    parser.add_argument("--warm", type=positive, default=2, help="untimed batches (with --interleave: rounds) first")
    parser.add_argument("--steps", type=positive, default=8, help="timed batches (with --interleave: the pool of images, "
                        "in batches of 64)")
    parser.add_argument("--interleave", action="store_true", help="TensorFlow options in one process, taking turns")
    parser.add_argument("--rounds", type=positive, default=20, help="with --interleave: timed rounds (after --warm untimed)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-interleave", help=argparse.SUPPRESS)
    args = parser.parse_args()
    require(parser, args.data / "rsna-100" / "labels.csv", hint=DATA_HINT)
    if args.child:
        print(json.dumps(measure(args.data, json.loads(args.child), args.warm, args.steps)))
        return
    if args.child_interleave:
        print(json.dumps(interleave(args.data, json.loads(args.child_interleave), args.warm, args.rounds, args.steps)))
        return

    names = ["baseline", *[n for n in (args.only or OPTIONS) if n != "baseline"]]
    root = Path(__file__).parent.parent
    if args.interleave:
        interleaved_table(args, names, root)
        return
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
