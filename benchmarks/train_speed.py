"""Training throughput per backbone and input size, and whether the input pipeline keeps up.

    BONEAGE_DATA=../shared/data python benchmarks/train_speed.py --sizes 100 128 256 --steps 4

For each (backbone, size): images/s of train steps fed from the real tf.data pipeline
(decode + the library's preprocessing + augmentation, after its cache is warm) and from
tensors already in memory, measured in the same process one after the other. A ratio near 1
means the pipeline keeps up with the model.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", default=os.environ.get("BONEAGE_DATA", "../shared/data"))
    parser.add_argument("--backbones", nargs="+", default=["densenet121", "resnet34_cbam"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[100, 128, 256])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()

    import keras

    from boneage.preprocess import build_pipeline
    from boneage.training.config import TrainConfig
    from boneage.training.data import prepare_data, preprocessed_dataset, training_batches
    from boneage.training.train import build_and_compile

    data = Path(args.data)
    print("| backbone | input | images/s, real pipeline | images/s, in memory | pipeline / memory |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        for backbone in args.backbones:
            config = TrainConfig.model_validate({
                "backbone": backbone, "input_size": size, "batch_size": args.batch,
                "sources": [{"labels": str(data / "rsna-100/labels.csv"), "images": str(data / "rsna-100")}],
                "limit": args.batch * (args.steps + 1), "val_limit": 8,
            })
            train, _ = prepare_data(config)
            model = build_and_compile(config, train, args.steps)
            cached = preprocessed_dataset(train, build_pipeline(config.resolved_preprocessing()))
            list(cached)  # warm the cache: decoding happens once per run
            batches = list(training_batches(cached, len(train), args.batch, config.augment, 0))
            model.train_on_batch(*batches[0])  # build the graph
            t = time.perf_counter()
            for x, y in training_batches(cached, len(train), args.batch, config.augment, 1).take(args.steps):
                model.train_on_batch(x, y)
            real = args.steps * args.batch / (time.perf_counter() - t)
            x0, y0 = {k: np.asarray(v) for k, v in batches[0][0].items()}, np.asarray(batches[0][1])
            t = time.perf_counter()
            for _ in range(args.steps):
                model.train_on_batch(x0, y0)
            memory = args.steps * args.batch / (time.perf_counter() - t)
            print(f"| {backbone} | {size} | {real:.1f} | {memory:.1f} | {real / memory:.2f} |", flush=True)
            keras.backend.clear_session()


if __name__ == "__main__":
    main()
