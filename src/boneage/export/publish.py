"""What both exports, float and int8, do with a finished ONNX model: score it in memory on
preprocessed images, and enter it in the models folder's registry.

Shared and public, so :mod:`boneage.export.export` and :mod:`boneage.export.quantize` both build on
this module instead of reaching into each other's private helpers (they used to import each other).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from boneage.modelcard import ModelCard, file_sha256
from boneage.models import Registry, RegistryEntry, load_registry, save_registry


def onnx_predict(data: bytes, images: np.ndarray, male: np.ndarray, batch: int = 64) -> np.ndarray:
    """Months for preprocessed ``images`` (NHWC float32) and ``male`` (N, 1) from a serialized ONNX
    model, unsealed or sealed, through the ONNX runtime boneage serves with: parity and metrics are
    measured on what users will run, before the file is written."""
    from boneage.runtimes.onnx import OnnxRuntime

    runtime = OnnxRuntime(Path("<memory>"), data)
    return np.concatenate([runtime.predict(images[i : i + batch], male[i : i + batch]) for i in range(0, len(images), batch)])


def int8_file(name: str, version: str) -> str:
    """The int8 model's file name beside ``NAME-VERSION.onnx``: export checks it before any work, quantize writes it."""
    return f"{name}-int8-{version}.onnx"


def register(out_dir: Path, path: Path, card: ModelCard, make_default: bool, keras_path: Path | None,
             quantized: str | None = None, recommended: bool = True) -> RegistryEntry:
    """Add (or replace, by file name or by name and version) the model at ``path`` in ``out_dir``'s registry
    with its checksum and validation metrics. A float model becomes the default when asked or when there is
    none yet; a quantized one never does (it is offered beside its float model, not instead of it)."""
    registry = load_registry(out_dir)
    entry = RegistryEntry(
        name=card.name,
        version=card.version,
        file=path.name,
        sha256=file_sha256(path),
        size=path.stat().st_size,
        backbone=card.backbone,
        metrics=card.metrics.get("validation", {}),
        recommended=recommended,
        quantized=quantized,
        keras_file=keras_path.name if keras_path else None,
        keras_sha256=card.keras_sha256,
    )
    # by file and by release: a registry may list a release only once
    models = [e for e in registry.models if e.file != entry.file and e.ref != entry.ref] + [entry]
    default = entry.ref if (make_default or registry.default is None) and quantized is None else registry.default
    save_registry(Registry(default=default, models=models), out_dir)
    return entry
