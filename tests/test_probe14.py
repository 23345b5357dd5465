"""Probe 14: ONNX graphs that pass the one-image memory budget yet grow faster than the batch, or compute for
minutes (runtimes/onnxbudget.check_graph_size), refused at load; the shipped model well inside both budgets."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper  # noqa: E402

from boneage import BoneAgeEstimator  # noqa: E402
from boneage.errors import InvalidModelError  # noqa: E402
from boneage.modelcard import CHECKSUM_KEY, PLACEHOLDER, seal  # noqa: E402
from boneage.models import load_registry  # noqa: E402
from boneage.runtimes.onnxbudget import FIXED_WORK, WORK_PER_INPUT_BYTE, check_graph_size  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def shipped() -> Path:
    registry = load_registry(ROOT / "exported")
    return ROOT / "exported" / next(e.file for e in registry.models if e.ref == registry.default)


def with_side_branch(nodes: list[Any], path: Path) -> Path:
    """The shipped model whose answer gets 0 x the mean of a side branch ending in 'side': same inputs,
    output and answers, any cost."""
    model = onnx.load(shipped())
    for node in model.graph.node:
        for i, name in enumerate(node.output):
            if name == "boneage_months":
                node.output[i] = "x0"
    model.graph.node.extend([*nodes,
        helper.make_node("ReduceMean", ["side"], ["side_mean"], keepdims=0),
        helper.make_node("Constant", [], ["zero"], value=helper.make_tensor("z", TensorProto.FLOAT, [], [0.0])),
        helper.make_node("Mul", ["side_mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["x0", "nothing"], ["boneage_months"])])
    for entry in model.metadata_props:
        if entry.key == CHECKSUM_KEY:
            entry.value = PLACEHOLDER
    path.write_bytes(seal(model.SerializeToString()))
    return path


def test_memory_that_grows_faster_than_the_batch_is_refused_at_load(tmp_path: Path) -> None:
    """A tensor of N**27 elements for N images: one element at one image (what the budget sized), 2**27 at two."""
    nodes = [helper.make_node("Shape", ["image"], ["shape"]),
             helper.make_node("Constant", [], ["at0"], value=helper.make_tensor("a", TensorProto.INT64, [1], [0])),
             helper.make_node("Constant", [], ["one"], value=helper.make_tensor("o", TensorProto.INT64, [1], [1])),
             helper.make_node("Gather", ["shape", "at0"], ["n0"], axis=0)]
    for k in range(26):
        nodes.append(helper.make_node("Mul", [f"n{k}", "n0"], [f"n{k + 1}"]))
    nodes += [helper.make_node("Concat", ["one", "n26"], ["wide"], axis=0),
              helper.make_node("Expand", ["x0", "wide"], ["side"])]
    with pytest.raises(InvalidModelError, match="for two: its memory grows faster than the batch"):
        BoneAgeEstimator(with_side_branch(nodes, tmp_path / "batch27.onnx"))


def test_a_graph_that_computes_for_minutes_is_refused_at_load(tmp_path: Path) -> None:
    """Large max-pooling windows: small tensors, 352 G visits an image (the probe's took 40 minutes)."""
    nodes = [helper.make_node("Transpose", ["image"], ["p0"], perm=[0, 3, 1, 2])]
    for j, (k, pad) in enumerate([(400, 399), (250, 0), (151, 0)] * 8):
        nodes.append(helper.make_node("MaxPool", [f"p{j}"], [f"p{j + 1}"], kernel_shape=[k, k], pads=[pad] * 4))
    nodes.append(helper.make_node("Identity", [f"p{len(nodes) - 1}"], ["side"]))
    with pytest.raises(InvalidModelError, match=r"computes 352\.\d G operations for one image"):
        BoneAgeEstimator(with_side_branch(nodes, tmp_path / "pools.onnx"))


def test_the_shipped_model_is_well_inside_both_budgets() -> None:
    size = check_graph_size(shipped().read_bytes(), "shipped", 100)
    assert 0.3e9 < size.work < (FIXED_WORK + WORK_PER_INPUT_BYTE * size.inputs) / 20  # measured: 0.54 G of 14.5


@pytest.mark.parametrize("flag, method, message", [(1, zipfile.ZIP_STORED, "is encrypted"),
                                                  (0, 9, "compressed with method 9"),
                                                  (0, 99, "compressed with method 99")])
def test_a_keras_member_encrypted_or_compressed_oddly_is_refused_from_the_directory(
        tmp_path: Path, flag: int, method: int, message: str) -> None:
    """zipfile raised RuntimeError or NotImplementedError reading such a member: exit 70 in train and export."""
    from boneage.errors import ConfigError
    from boneage.models import check_keras_file

    path = tmp_path / "m.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", b"\0" * 64)
    data = bytearray(path.read_bytes())
    entry = data.rfind(b"PK\x01\x02", 0, data.rfind(b"PK\x01\x02"))  # config.json's central directory entry
    struct.pack_into("<HH", data, entry + 8, flag, method)  # general purpose flags, compression method
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidModelError, match=message):
        check_keras_file(path)
    with pytest.raises(ConfigError, match=message):
        check_keras_file(path, ConfigError)
