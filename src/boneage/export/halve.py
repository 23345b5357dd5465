"""Float weights stored in 16 bits: half the file, float32 arithmetic.

Each large float32 initializer is stored as float16 and cast back to float32 by a ``Cast`` node at
the head of the graph; ONNX Runtime folds those casts when it loads the model, so it runs the
float32 graph with its weights rounded to 16 bits; the ``.keras`` beside it (the TensorFlow runtime, warm
restarts) keeps its weights in 16 bits too. This is the shipped model's form from 0.5.0 on:
int8 was the small file before, but on the same weights it moved answers under a 1-px crop by up to
14 months against float's 3.9, and lost 0.55 months at higher resolution (docs/benchmarks.md).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from boneage.whole import write_whole

MIN_ELEMENTS = 1024  # smaller tensors stay float32 (most biases and batch-norm vectors; those of 1,024 channels
# or more are halved too: 0.5.0's answers moved by 0.18 months at most, measured by export)


def _halved(values: Any, name: str) -> np.ndarray | None:
    """``values`` as float16 when they are float32 and at least :data:`MIN_ELEMENTS` of them, else None; a
    value outside float16's range is a ValueError (it would become infinity)."""
    if not isinstance(values, np.ndarray) or values.dtype != np.float32 or values.size < MIN_ELEMENTS:
        return None
    if not np.all(np.abs(values) <= np.finfo(np.float16).max):
        raise ValueError(f"weight {name!r} holds values beyond float16's range")
    return values.astype(np.float16)


def halve_weights(graph: Any) -> int:
    """Store ``graph``'s float32 initializers of at least :data:`MIN_ELEMENTS` values as float16, each read
    through a Cast to float32 under its old name, so no node changes; returns how many were halved. A value
    outside float16's range refuses the whole model (ValueError): it would become infinity."""
    from onnx import TensorProto, helper, numpy_helper

    found = [(t, _halved(numpy_helper.to_array(t), t.name)) for t in graph.initializer
             if t.data_type == TensorProto.FLOAT]  # all checked before any is changed
    large = [(t, half) for t, half in found if half is not None]
    casts = []
    for tensor, half in large:
        name = tensor.name
        tensor.CopyFrom(numpy_helper.from_array(half, f"{name}.fp16"))
        casts.append(helper.make_node("Cast", [f"{name}.fp16"], [name], to=TensorProto.FLOAT, name=f"{name}.cast"))
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return len(large)


def halve_keras(path: Path) -> None:
    """The ``.keras`` archive at ``path`` rewritten with its float32 weights of at least :data:`MIN_ELEMENTS`
    values stored as float16 (a new weights file, not the old one with datasets deleted: HDF5 keeps their space).
    boneage loads a ``.keras`` into its own float32 model (``load_keras_weights``), which casts them back."""
    import h5py

    def copy(source: Any, target: Any) -> None:
        target.attrs.update(source.attrs)
        for name, item in source.items():
            if isinstance(item, h5py.Group):
                copy(item, target.create_group(name))
                continue
            value = item[()]
            half = _halved(value, item.name)
            target.create_dataset(name, data=value if half is None else half).attrs.update(item.attrs)

    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    halved = io.BytesIO()
    with h5py.File(io.BytesIO(members["model.weights.h5"]), "r") as source, h5py.File(halved, "w") as target:
        copy(source, target)
    members["model.weights.h5"] = halved.getvalue()

    def write(temporary: Path) -> None:
        with zipfile.ZipFile(temporary, "w", zipfile.ZIP_STORED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)

    # a new name (a fixed NAME-VERSION.keras.partial wrote through a link, or over a file, of that name)
    write_whole(path, write)
