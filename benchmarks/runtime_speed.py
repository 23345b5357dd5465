"""The TensorFlow runtime against ONNX Runtime on the same weights, measured in one run.

    python benchmarks/runtime_speed.py [MODEL] --threads 2 --repeats 30

MODEL (a registry ref or path; default: the default model) must have its ``.keras`` file (the
TensorFlow runtime's input). The ONNX model timed against it is converted from that same
``.keras`` in memory (an int8 release's ONNX would not be the same model). Both runtimes get the
same random preprocessed batches; the table gives median ms and the TensorFlow / ONNX Runtime ratio.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from boneage.cli.arguments import positive, usage_errors

if TYPE_CHECKING:
    from boneage.specs import Runtime


class Eager:
    """The Keras model called eagerly, layer by layer, as the TensorFlow runtime did before."""

    name = "eager"

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, images: np.ndarray, male: np.ndarray) -> np.ndarray:
        return np.asarray(self.model({"image": images, "male": male}, training=False)).reshape(-1)


def timed(runtime: Runtime, size: int, batch: int, repeats: int) -> float:
    images = np.random.default_rng(0).random((batch, size, size, 1), np.float32)
    male = np.ones((batch, 1), np.float32)
    runtime.predict(images, male)
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        runtime.predict(images, male)
        samples.append(time.perf_counter() - t)
    return 1000 * float(np.median(samples))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", nargs="?")
    parser.add_argument("--threads", type=positive, default=None)
    parser.add_argument("--repeats", type=positive, default=30)
    parser.add_argument("--eager", action="store_true", help="also time the eager Keras call (the runtime before 0.5)")
    args = parser.parse_args()

    from boneage import BoneAgeEstimator
    from boneage.export.convert import keras_to_onnx
    from boneage.runtimes.onnx import OnnxRuntime

    t = time.perf_counter()
    with usage_errors(parser):  # a model that is not there, or without its .keras, the train extra missing
        tf_estimator = BoneAgeEstimator(args.model, runtime="tensorflow", threads=args.threads)
    load_s = time.perf_counter() - t
    size = tf_estimator.card.input_size
    onnx = OnnxRuntime(Path("<converted>"), keras_to_onnx(tf_estimator.runtime.model, size).SerializeToString(),
                       threads=args.threads, input_size=size)
    print(f"model: {tf_estimator.card.ref} (.keras: {tf_estimator.card.backbone}, {size} px); "
          f"TensorFlow runtime loaded and traced in {load_s:.1f} s")
    eager = Eager(tf_estimator.runtime.model) if args.eager else None
    print("| batch | ONNX Runtime ms | TensorFlow ms | TensorFlow / ONNX Runtime |"
          + (" eager Keras ms | eager / ONNX Runtime |" if eager else ""))
    print("|---|---|---|---|" + ("---|---|" if eager else ""))
    for batch, repeats in ((1, args.repeats), (16, max(3, args.repeats // 5))):
        ort_ms = timed(onnx, size, batch, repeats)
        tf_ms = timed(tf_estimator.runtime, size, batch, repeats)
        row = f"| {batch} | {ort_ms:.1f} | {tf_ms:.1f} | {tf_ms / ort_ms:.2f} |"
        if eager is not None:
            eager_ms = timed(eager, size, batch, max(3, repeats // 3))
            row += f" {eager_ms:.1f} | {eager_ms / ort_ms:.1f} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
