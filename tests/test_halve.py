"""boneage.export.halve: large float32 weights stored as float16 behind a Cast, the graph's nodes unchanged."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="needs onnx (extra: export)")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from boneage.export.halve import MIN_ELEMENTS, halve_weights  # noqa: E402


def model(weight: np.ndarray, bias: np.ndarray) -> Any:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y0"]), helper.make_node("Add", ["y0", "b"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weight.shape[1]])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)  # ONNX Runtime reads 8


def run(proto: Any, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"x": x})[0])


def test_large_weights_are_halved_small_ones_kept_and_answers_barely_move() -> None:
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.1, (64, 32)).astype(np.float32)  # 2,048 values: halved
    bias = rng.normal(0, 1, 32).astype(np.float32)  # 32 values: kept
    proto, x = model(weight, bias), rng.normal(0, 1, (1, 64)).astype(np.float32)
    before = run(proto, x)
    assert halve_weights(proto.graph) == 1
    onnx.checker.check_model(proto)
    kinds = {t.name: t.data_type for t in proto.graph.initializer}
    assert kinds == {"w.fp16": TensorProto.FLOAT16, "b": TensorProto.FLOAT}
    assert proto.graph.node[0].op_type == "Cast" and proto.graph.node[0].output[0] == "w"
    after = run(proto, x)
    assert after.dtype == np.float32
    assert np.abs(after - before).max() < 1e-2 and not np.array_equal(after, before)


def test_a_weight_beyond_float16_range_refuses_the_model() -> None:
    weight = np.full((MIN_ELEMENTS, 1), 1e6, np.float32)
    proto = model(weight, np.zeros(1, np.float32))
    with pytest.raises(ValueError, match="beyond float16"):
        halve_weights(proto.graph)


def test_a_keras_archive_keeps_its_members_and_halves_its_large_weights(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py", reason="needs h5py (extra: train)")
    from boneage.export.halve import halve_keras

    rng = np.random.default_rng(1)
    weights = tmp_path / "w.h5"
    with h5py.File(weights, "w") as f:
        layer = f.create_group("layers/dense/vars")
        layer.attrs["note"] = "kept"
        layer.create_dataset("0", data=rng.normal(0, 1, (64, 32)).astype(np.float32))
        layer.create_dataset("1", data=np.ones(32, np.float32))
        f.create_dataset("count", data=np.int64(3))
    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("metadata.json", "{}")
        archive.write(weights, "model.weights.h5")
    before = path.stat().st_size
    halve_keras(path)
    assert path.stat().st_size < before - 64 * 32 and not list(tmp_path.glob("*.partial"))
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["config.json", "metadata.json", "model.weights.h5"]
        (tmp_path / "out.h5").write_bytes(archive.read("model.weights.h5"))
    with h5py.File(tmp_path / "out.h5") as f:
        assert f["layers/dense/vars/0"].dtype == np.float16 and f["layers/dense/vars/1"].dtype == np.float32
        assert f["layers/dense/vars"].attrs["note"] == "kept" and f["count"][()] == 3
