"""ONNX Runtime with explicit thread settings (containers and schedulers otherwise oversubscribe)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort

from boneage.errors import InvalidModelError
from boneage.modelcard import IMAGE_INPUT, SEX_INPUT


def default_threads() -> int:
    """``OMP_NUM_THREADS`` if set, else the cores this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def session_options(threads: int | None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or default_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class OnnxRuntime:
    name = "onnx"

    def __init__(self, path: Path, data: bytes | None = None, threads: int | None = None) -> None:
        if path.suffix == ".keras":
            raise InvalidModelError(f"{path} is a Keras model: use runtime='tensorflow', or export it to ONNX")
        try:
            self.session = ort.InferenceSession(
                data if data is not None else str(path), session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise InvalidModelError(f"{path} is not a loadable ONNX model: {exc}") from exc
        names = {i.name for i in self.session.get_inputs()}
        if names != {IMAGE_INPUT, SEX_INPUT}:
            raise InvalidModelError(
                f"{path} has inputs {sorted(names)}; a boneage model has {IMAGE_INPUT!r} and {SEX_INPUT!r}"
            )
        self.output = self.session.get_outputs()[0].name

    def predict(self, images: np.ndarray, male: np.ndarray) -> np.ndarray:
        try:
            (out,) = self.session.run([self.output], {IMAGE_INPUT: images, SEX_INPUT: male})
        except Exception as exc:  # shape or type mismatch between the card and the graph
            raise InvalidModelError(f"the model failed on a batch of shape {images.shape}: {exc}") from exc
        return np.asarray(out, dtype=np.float32).reshape(-1)
