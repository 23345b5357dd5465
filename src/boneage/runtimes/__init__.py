"""The built-in runtimes. Each is imported only when chosen, so ONNX inference never pulls in
TensorFlow."""

from __future__ import annotations

from boneage.hookspecs import hookimpl
from boneage.models import ModelFile
from boneage.specs import Runtime, RuntimeSpec


def _onnx(model: ModelFile, threads: int | None) -> Runtime:
    from boneage.runtimes.onnx import OnnxRuntime

    return OnnxRuntime(model.path, model.data, threads=threads)


def _tensorflow(model: ModelFile, threads: int | None) -> Runtime:
    from boneage.runtimes.tensorflow import TensorFlowRuntime

    return TensorFlowRuntime(model.path, model.card, threads=threads)


@hookimpl
def boneage_register_runtimes() -> list[RuntimeSpec]:
    return [
        RuntimeSpec("onnx", _onnx, "ONNX Runtime on the CPU (default)"),
        RuntimeSpec("tensorflow", _tensorflow, "Keras on TensorFlow: a .keras model, or the .keras exported beside an ONNX model"),
    ]
