"""The built-in runtimes. Each is imported only when chosen, so ONNX inference never pulls in
TensorFlow."""

from __future__ import annotations

import numpy as np

from boneage.errors import ModelOutputError
from boneage.hookspecs import hookimpl
from boneage.models import ModelFile, inside
from boneage.specs import Runtime, RuntimeSpec


def checked_months(out: object, n: int) -> np.ndarray:
    """A runtime's answer for ``n`` images as ``n`` finite float32 months. Anything else (NaN,
    infinity, another shape, integers or strings) is a fault of the model, never printed as an age."""
    try:
        array = np.asarray(out)
    except (ValueError, TypeError) as exc:  # ragged or exotic objects from a plugin runtime
        raise ModelOutputError(f"the model answered something that is not an array: {exc}") from exc
    if array.dtype.kind != "f":
        raise ModelOutputError(f"the model answered {array.dtype} values, not floating-point months")
    if array.shape not in ((n,), (n, 1)):
        raise ModelOutputError(f"the model answered shape {array.shape} for {n} images, not ({n},) or ({n}, 1)")
    with np.errstate(over="ignore"):
        months = array.astype(np.float32).reshape(n)
    bad = int(np.count_nonzero(~np.isfinite(months)))
    if bad:
        raise ModelOutputError(f"the model answered NaN or infinity for {bad} of {n} images")
    return months


def _onnx(model: ModelFile, threads: int | None) -> Runtime:
    from boneage.runtimes.onnx import OnnxRuntime

    return OnnxRuntime(model.path, model.data, threads=threads, input_size=model.card.input_size)


def _tensorflow(model: ModelFile, threads: int | None) -> Runtime:
    from boneage.runtimes.tensorflow import TensorFlowRuntime

    entry = model.entry
    if entry is not None and entry.keras_file:  # a release names its Keras weights in the registry
        keras = inside(model.path.parent, entry.keras_file)  # a link out of the folder is refused, as for `file`
        return TensorFlowRuntime(model.path, model.card, threads=threads, keras=keras, keras_sha256=entry.keras_sha256)
    return TensorFlowRuntime(model.path, model.card, threads=threads)


@hookimpl
def boneage_register_runtimes() -> list[RuntimeSpec]:
    """Registers ``onnx`` and ``tensorflow`` through the plugin API; each imports its library only
    when a model is loaded, so the default path never imports TensorFlow."""
    return [
        RuntimeSpec(name="onnx", load=_onnx, doc="ONNX Runtime on the CPU (default)"),
        RuntimeSpec(name="tensorflow", load=_tensorflow,
                    doc="Keras on TensorFlow: a .keras model, or the .keras exported beside an ONNX model"),
    ]
