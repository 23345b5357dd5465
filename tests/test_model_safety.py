"""Hostile and broken model files: external data, size, special files, registry escapes, bad
outputs and cards, and what the checksum does and does not promise (issue 19, items 2, 5, 6)."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from boneage import BoneAgeEstimator, models
from boneage.cli.main import main
from boneage.errors import ChecksumMismatchError, InvalidModelError, ModelError, ModelOutputError
from boneage.export.onnxcard import attach_card
from boneage.modelcard import CARD_KEY, CHECKSUM_KEY, PLACEHOLDER, content_hash, read_card, seal
from boneage.models import load_registry, open_model
from boneage.onnxwire import TENSOR_PATHS, external_tensors
from boneage.preprocess import PreprocessConfig
from boneage.runtimes import checked_months
from tests.helpers import register, tiny_card, tiny_proto, write_png, write_tiny_model

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

SECRET = struct.pack("<f", 1000.0)  # what a crafted model would read from a file it was not given


def external(name: str = "ext", location: str = "secret.bin", flag: bool = True) -> Any:
    """A one-float tensor whose data lives in the file ``location``."""
    tensor = helper.make_tensor(name, TensorProto.FLOAT, [1], [0.0])
    tensor.ClearField("float_data")
    if flag:
        tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "4")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def branch(name: str, node: Any, inits: tuple[Any, ...] = ()) -> Any:
    out = helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)
    return helper.make_graph([node], name, [], [out], list(inits))


def leaking_proto() -> Any:
    """A working tiny model whose offset comes from an ``If`` branch that reads ``secret.bin`` from
    the current directory: ONNX Runtime 1.32 validates top-level external data, not subgraphs'."""
    proto = tiny_proto(64)
    final = proto.graph.node[-1]
    final.input[1] = "leaked"
    then = branch("then", helper.make_node("Identity", ["ext"], ["from_file"]), (external(),))
    other = branch("else", helper.make_node("Identity", ["offset"], ["from_card"]))
    proto.graph.node.insert(len(proto.graph.node) - 1, helper.make_node("ReduceMax", ["male"], ["top"], keepdims=0))
    proto.graph.node.insert(len(proto.graph.node) - 1, helper.make_node("Less", ["top", "two"], ["cond"]))
    proto.graph.node.insert(len(proto.graph.node) - 1,
                            helper.make_node("If", ["cond"], ["leaked"], then_branch=then, else_branch=other))
    proto.graph.initializer.append(helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]))
    return proto


def place(where: str) -> Any:
    """The tiny model with an external tensor in one of the places a tensor can live."""
    proto = tiny_proto(64)
    graph = proto.graph
    if where == "initializer":
        graph.initializer.append(external())
    elif where == "external_data_without_flag":
        graph.initializer.append(external(flag=False))
    elif where == "constant":
        graph.node.append(helper.make_node("Constant", [], ["c"], value=external()))
    elif where == "constant_list":
        graph.node.append(helper.make_node("Constant", [], ["c"], value=external()))
        graph.node[-1].attribute[0].tensors.append(external())
    elif where == "subgraph":
        inner = branch("inner", helper.make_node("Constant", [], ["c"], value=external()))
        outer = branch("outer", helper.make_node("If", ["cond"], ["c2"], then_branch=inner, else_branch=inner))
        graph.node.append(helper.make_node("If", ["cond"], ["c3"], then_branch=outer, else_branch=outer))
    elif where == "sparse":
        indices = helper.make_tensor("i", TensorProto.INT64, [1], [0])
        graph.sparse_initializer.append(helper.make_sparse_tensor(external(), indices, [4]))
    elif where == "function":
        function = helper.make_function("custom", "f", [], ["c"], [helper.make_node("Constant", [], ["c"], value=external())],
                                        [helper.make_opsetid("", 18)])
        proto.functions.append(function)
    elif where == "training":
        training = proto.training_info.add()
        training.initialization.CopyFrom(branch("init", helper.make_node("Identity", ["ext"], ["o"]), (external(),)))
    return proto


# --- item 2: a model file must not read other files ------------------------------------------

def test_model_cannot_read_a_file_through_a_subgraph(tmp_path: Path, models_dir: Path, radiograph: np.ndarray,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.bin").write_bytes(SECRET)
    path = tmp_path / "leak.onnx"
    path.write_bytes(attach_card(leaking_proto(), tiny_card(64)))
    with pytest.raises(InvalidModelError, match="external"):
        BoneAgeEstimator(path).predict(radiograph, male=True)


@pytest.mark.parametrize("where", ["initializer", "external_data_without_flag", "constant", "constant_list", "subgraph",
                                   "sparse", "function", "training"])
def test_external_data_refused_wherever_it_hides(where: str, tmp_path: Path, models_dir: Path) -> None:
    path = tmp_path / f"{where}.onnx"
    path.write_bytes(attach_card(place(where), tiny_card(64)))
    assert external_tensors(path.read_bytes()) >= 1
    with pytest.raises(InvalidModelError, match="external files"):
        open_model(path)


def test_self_contained_models_pass(tiny_model: Path) -> None:
    assert external_tensors(tiny_model.read_bytes()) == 0
    shipped = Path(__file__).resolve().parents[1] / "exported"
    for release in sorted(shipped.glob("*.onnx"))[:1]:  # the real graph, when the repository has it
        assert external_tensors(release.read_bytes()) == 0


def test_wire_table_covers_every_path_to_a_tensor() -> None:
    """Every message field of the ONNX schema that can lead to a TensorProto is in TENSOR_PATHS,
    so no new place for a tensor escapes the check when onnx grows."""
    from google.protobuf.descriptor import FieldDescriptor

    messages, todo = {}, [onnx.ModelProto.DESCRIPTOR]
    while todo:
        message = todo.pop()
        if message.name not in messages:
            messages[message.name] = message
            todo += [f.message_type for f in message.fields if f.type == FieldDescriptor.TYPE_MESSAGE]
    reach = {"TensorProto"}
    grown = True
    while grown:
        before = len(reach)
        reach |= {name for name, m in messages.items()
                  if any(f.message_type is not None and f.message_type.name in reach for f in m.fields)}
        grown = len(reach) > before
    expected = {name: {f.number: f.message_type.name for f in messages[name].fields
                       if f.message_type is not None and f.message_type.name in reach} for name in reach}
    assert expected == TENSOR_PATHS


def test_garbage_protobuf_is_a_model_error() -> None:
    for data in (b"\x0f", b"\x3a\xff\xff\xff\xff\x0f", b"\x80" * 20):
        with pytest.raises(InvalidModelError):
            external_tensors(data)


def test_model_size_is_capped(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "MAX_MODEL_BYTES", 1000)
    with pytest.raises(InvalidModelError, match="larger than 1,000 bytes"):
        open_model(tiny_model)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_special_files_are_not_models(tmp_path: Path, models_dir: Path) -> None:
    fifo = tmp_path / "fifo.onnx"
    os.mkfifo(fifo)  # opening it to read would block forever without a writer
    zero = tmp_path / "zero.onnx"
    zero.symlink_to("/dev/zero")  # reading it would never end
    for path in (fifo, zero, tmp_path):
        with pytest.raises(InvalidModelError, match="not a regular file"):
            open_model(path)
        assert main(["predict", "x.png", "--sex", "m", "--model", str(path)]) == 3


def entry(file: str, **changes: object) -> dict[str, object]:
    return {"name": "tiny", "version": "1.0.0", "file": file, "sha256": "0" * 64, "size": 1, "backbone": "b", **changes}


@pytest.mark.parametrize("changes", [
    {"file": "../outside.onnx"}, {"file": "/etc/passwd"}, {"file": "sub/../../outside.onnx"}, {"file": "..\\outside.onnx"},
    {"file": "C:/x.onnx"}, {"keras_file": "../outside.keras"}, {"keras_file": "/tmp/x.keras"}, {"file": ""},
])
def test_registry_files_stay_in_the_models_folder(changes: dict[str, object], models_dir: Path) -> None:
    (models_dir / "registry.json").write_text(json.dumps({"models": [entry(**{"file": "tiny.onnx", **changes})]}))
    with pytest.raises(InvalidModelError, match="models folder"):
        load_registry(models_dir)


def test_registry_symlink_cannot_escape(tmp_path: Path, models_dir: Path) -> None:
    outside = write_tiny_model(tmp_path / "outside.onnx")
    register(outside, models_dir).unlink()
    (models_dir / "tiny-1.0.0.onnx").symlink_to(outside)  # the registered name, pointing out
    for ref in ("tiny", outside):
        with pytest.raises(InvalidModelError, match="outside the models folder"):
            open_model(ref)


# --- item 5: outputs and cards are validated, as model errors -------------------------------

def with_offset(value: float, shape: tuple[int, ...] = ()) -> Any:
    proto = tiny_proto(64)
    offset = next(t for t in proto.graph.initializer if t.name == "offset")
    offset.CopyFrom(helper.make_tensor("offset", TensorProto.FLOAT, list(shape), [value] * int(np.prod(shape))))
    return proto


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_output_is_a_model_error(value: float, tmp_path: Path, models_dir: Path,
                                            radiograph: np.ndarray) -> None:
    path = tmp_path / "nan.onnx"
    path.write_bytes(attach_card(with_offset(value), tiny_card(64)))
    with pytest.raises(ModelOutputError, match="NaN or infinity"):
        BoneAgeEstimator(path).predict(radiograph, male=True)
    png = write_png(tmp_path / "hand.png", radiograph)
    assert main(["predict", str(png), "--sex", "m", "--model", str(path), "--json"]) == 3


def test_wrong_output_shape_at_run_time(tmp_path: Path, models_dir: Path, radiograph: np.ndarray) -> None:
    path = tmp_path / "wide.onnx"  # declares (batch, 1) but answers (batch, 2)
    path.write_bytes(attach_card(with_offset(1.0, (2,)), tiny_card(64)))
    with pytest.raises(ModelOutputError, match=r"shape \(1, 2\)"):
        BoneAgeEstimator(path).predict(radiograph, male=True)


def retyped(proto: Any, to: int, shape: list[Any] | None = None) -> Any:
    """The tiny model with its output cast to type ``to`` and declared with ``shape``."""
    proto.graph.node[-1].output[0] = "months_float"
    proto.graph.node.append(helper.make_node("Cast", ["months_float"], ["boneage_months"], to=to))
    proto.graph.output[0].CopyFrom(helper.make_tensor_value_info("boneage_months", to, shape or ["batch", 1]))
    return proto


@pytest.mark.parametrize(("proto", "message"), [
    (lambda: retyped(tiny_proto(64), TensorProto.INT64), "one float output"),
    (lambda: retyped(tiny_proto(64), TensorProto.STRING), "one float output"),
    (lambda: retyped(with_offset(1.0, (3,)), TensorProto.FLOAT, ["batch", 3]), "answers shape"),
    (lambda: retyped(tiny_proto(64), TensorProto.FLOAT, ["batch", 1, 1]), "answers shape"),
    (lambda: tiny_proto(128), "input_size 64"),
])
def test_wrong_signature_refused_at_load_time(proto: Any, message: str, tmp_path: Path, models_dir: Path) -> None:
    path = tmp_path / "odd.onnx"
    path.write_bytes(attach_card(proto(), tiny_card(64)))
    with pytest.raises(InvalidModelError, match=message):
        BoneAgeEstimator(path)


def test_two_outputs_refused(tmp_path: Path, models_dir: Path) -> None:
    proto = tiny_proto(64)
    proto.graph.output.append(helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch", 1]))
    path = tmp_path / "two.onnx"
    path.write_bytes(attach_card(proto, tiny_card(64)))
    with pytest.raises(InvalidModelError, match="one float output"):
        BoneAgeEstimator(path)


@pytest.mark.parametrize(("out", "n"), [
    (np.array([1, 2]), 2), (np.array(["1", "2"]), 2), (np.zeros((2, 2), np.float32), 2), (np.zeros(3, np.float32), 2),
    (np.zeros((1, 2), np.float32), 2), (np.array([1e39, 1.0]), 2), ([[1.0], [2.0, 3.0]], 2), ({"months": 1.0}, 1),
    (np.array([np.nan], np.float16), 1),
])
def test_checked_months_refuses_what_cannot_be_months(out: Any, n: int) -> None:
    with pytest.raises(ModelOutputError):
        checked_months(out, n)


def test_checked_months_accepts_n_and_n_by_1() -> None:
    assert checked_months(np.array([[1.5], [2.5]], np.float64), 2).tolist() == [1.5, 2.5]
    assert checked_months(np.array([3.0], np.float16), 1).dtype == np.float32


def test_card_with_inconsistent_input_size_is_a_model_error(tmp_path: Path, models_dir: Path) -> None:
    card = tiny_card(64, preprocessing=PreprocessConfig.default(128))  # model_copy does not validate
    path = tmp_path / "odd.onnx"
    path.write_bytes(attach_card(tiny_proto(64), card))
    with pytest.raises(InvalidModelError, match="resizes to 128"):
        open_model(path)
    png = write_png(tmp_path / "hand.png", np.zeros((80, 80), np.uint8))
    assert main(["predict", str(png), "--sex", "m", "--model", str(path)]) == 3  # was 2, "bad input"


def with_card_text(text: str) -> bytes:
    proto = tiny_proto(64)
    for key, value in ((CARD_KEY, text), (CHECKSUM_KEY, PLACEHOLDER)):
        item = proto.metadata_props.add()
        item.key, item.value = key, value
    return seal(proto.SerializeToString())


def test_deeply_nested_card_is_a_model_error(tmp_path: Path, models_dir: Path) -> None:
    card = json.loads(tiny_card(64).model_dump_json())
    text = json.dumps(card)[:-1] + ', "notes": {"deep": ' + "[" * 100_000 + "]" * 100_000 + "}}"
    path = tmp_path / "deep.onnx"
    path.write_bytes(with_card_text(text))
    with pytest.raises(InvalidModelError, match="not valid JSON"):
        open_model(path)
    assert main(["predict", "x.png", "--sex", "m", "--model", str(path)]) == 3  # was 70, an internal error


@pytest.mark.parametrize("version", ["1.²", "1.0", "latest", "1.0.0\n", "١.٠.٠"])
def test_registry_version_must_be_semantic(version: str, models_dir: Path) -> None:
    (models_dir / "registry.json").write_text(json.dumps({"models": [entry("tiny.onnx", version=version)]}))
    with pytest.raises(InvalidModelError, match="not semantic"):
        load_registry(models_dir)
    assert main(["predict", "x.png", "--sex", "m", "--model", "tiny"]) == 3  # "1.²" was 70


# --- item 6: what the checksum promises -----------------------------------------------------

def resealed(data: bytes) -> bytes:
    """A changed model sealed again: anyone can recompute the embedded checksum."""
    changed = data.replace(struct.pack("<f", 100.0), struct.pack("<f", 101.0), 1)
    assert changed != data
    at = changed.rfind(content_hash(data).encode())
    return seal(changed[:at] + PLACEHOLDER.encode() + changed[at + 64 :])


def test_resealed_model_by_path_is_labelled_unknown(tiny_model: Path, tmp_path: Path, radiograph: np.ndarray) -> None:
    forged = tmp_path / "forged.onnx"
    forged.write_bytes(resealed(tiny_model.read_bytes()))
    assert read_card(forged.read_bytes(), "forged").ref == "tiny-1.0.0"  # claims to be the release
    est = BoneAgeEstimator(forged)  # still usable, as a model of one's own is
    assert not est.model.known_release and est.model.entry is None
    prediction = est.predict(radiograph, male=True)
    assert any("not a known release" in w for w in prediction.warnings)


def test_copy_of_a_release_is_known(tiny_model: Path, radiograph: np.ndarray) -> None:
    est = BoneAgeEstimator(tiny_model)  # outside the models folder, same bytes as the release
    assert est.model.known_release and est.model.entry is not None and est.model.entry.ref == "tiny-1.0.0"
    assert est.predict(radiograph, male=True).warnings == ()


def test_resealed_model_under_the_registered_name_is_refused(tiny_model: Path, models_dir: Path) -> None:
    registered = models_dir / "tiny-1.0.0.onnx"
    registered.write_bytes(resealed(registered.read_bytes()))
    for ref in ("tiny", registered):
        with pytest.raises(ChecksumMismatchError, match="does not match the registry"):
            open_model(ref)


def test_registry_entry_must_match_its_card(tmp_path: Path, models_dir: Path) -> None:
    path = write_tiny_model(tmp_path / "other.onnx", card=tiny_card(64, name="other"))
    copy = register(path, models_dir)
    registry = load_registry(models_dir)
    registry.models[0].name = "tiny"
    models.save_registry(registry, models_dir)
    for ref in ("tiny", copy, path):
        with pytest.raises(InvalidModelError, match="card says other-1.0.0"):
            open_model(ref)


def test_model_errors_exit_3() -> None:
    assert issubclass(ModelOutputError, ModelError) and ModelOutputError.exit_code == 3


def test_onnx_runtime_parses_bytes_as_onnx_only() -> None:
    """ORT-format bytes would bypass the protobuf check for external data: the graph-size check parses them as
    ONNX first, and ONNX Runtime is told to parse model bytes as ONNX only."""
    import onnxruntime as ort

    from boneage.runtimes.onnx import OnnxRuntime, session_options

    fake = b"\x10\x00\x00\x00ORTM" + bytes(64)
    with pytest.raises(InvalidModelError, match="could not be read to size it"):
        OnnxRuntime(Path("fake.ort"), fake)
    with pytest.raises(Exception, match="protobuf parsing failed"):
        ort.InferenceSession(fake, session_options(None), providers=["CPUExecutionProvider"])
