"""Where a training step's time goes on this machine: the augmented data path alone, the model
alone on a fixed batch, and both together through fit(), in images/s.

    KERAS_BACKEND=torch python tools/gpu/profile_step.py DATA_DIR/rsna-100 --batches 64 256
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from boneage.cli.arguments import positive, require


def rate(fn, n: int, images: int) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    for i in range(n):
        fn(i)
    return n * images / (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, help="a data folder with labels.csv")
    parser.add_argument("--batches", type=positive, nargs="+", default=[64])
    parser.add_argument("--steps", type=positive, default=15)
    parser.add_argument("--limit", type=positive, default=2048)
    args = parser.parse_args()
    require(parser, args.images / "labels.csv")

    import cv2
    import keras

    from boneage.preprocess import build_pipeline
    from boneage.training.arrays import ArrayBatches, load_arrays
    from boneage.training.config import TrainConfig
    from boneage.training.data import prepare_data
    from boneage.training.train import build_and_compile

    config = TrainConfig.model_validate({"sources": [{"labels": str(args.images / "labels.csv"), "images": str(args.images)}],
                                         "limit": args.limit, "val_limit": 8, "input_size": 100})
    train, _ = prepare_data(config)
    t = time.perf_counter()
    arrays = load_arrays(train, build_pipeline(config.resolved_preprocessing()), 8)
    print(f"[{keras.backend.backend()}] decode+preprocess: {len(arrays) / (time.perf_counter() - t):.0f} images/s (8 threads)")
    for threads in (None, 1):
        if threads:
            cv2.setNumThreads(threads)
        data = ArrayBatches(arrays, 64, aug=config.augment, steps=args.steps)
        print(f"  augment only, one thread, cv2 threads {cv2.getNumThreads()}: "
              f"{rate(data.__getitem__, args.steps, 64):.0f} images/s", flush=True)
    for batch in args.batches:
        config = config.model_copy(update={"batch_size": batch})
        model = build_and_compile(config, train, 100)
        data = ArrayBatches(arrays, batch, aug=config.augment, steps=args.steps, workers=6)
        x, y = data[0]
        t = time.perf_counter()
        for _ in range(2):
            model.train_on_batch(x, y)
        warm = time.perf_counter() - t
        step = rate(lambda i, m=model, x=x, y=y: m.train_on_batch(x, y), args.steps, batch)
        t = time.perf_counter()
        model.fit(data, epochs=1, verbose=0)
        fit = args.steps * batch / (time.perf_counter() - t)
        pred = rate(lambda i, m=model, x=x: m.predict_on_batch(x), args.steps, batch)
        print(f"  batch {batch}: first 2 steps {warm:.1f} s; train_on_batch {step:.0f} images/s; "
              f"fit() with augmentation {fit:.0f} images/s; predict {pred:.0f} images/s", flush=True)
        keras.backend.clear_session()


if __name__ == "__main__":
    main()
