"""Probe 13, findings 1, 2 and 6: a .keras file's own architecture is never built (boneage's backbone is, and
only the weights are read from the archive); the ZIP64 end record that is checked is the one zipfile uses;
a registered .keras is loaded by name only with its registry sha256."""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from boneage.errors import ChecksumMismatchError, ConfigError, InvalidModelError
from boneage.models import RegistryEntry, check_keras_file, load_registry, open_model, save_registry

SIZE = 32


def tiny_keras(path: Path, **options: Any) -> Any:
    """A tiny_cnn model saved at ``path`` (its run's config.json beside it), returned."""
    from tests import tiny_backbone

    path.parent.mkdir(parents=True, exist_ok=True)
    model = tiny_backbone.build(SIZE, **options)
    model.save(path)
    (path.parent / "config.json").write_text(json.dumps({"backbone": "tiny_cnn", "input_size": SIZE}))
    return model


def edited(source: Path, target: Path, edit: Any = None, weights: bytes | None = None) -> Path:
    """A copy of the .keras archive ``source`` with ``edit(config)`` applied to its config.json and, given
    ``weights``, another model.weights.h5."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "config.json" and edit is not None:
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            if name == "model.weights.h5" and weights is not None:
                data = weights
            zout.writestr(name, data)
    return target


def layers_named(config: Any, name: str) -> list[dict[str, Any]]:
    found, stack = [], [config]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            if isinstance(item.get("config"), dict) and item["config"].get("name") == name and "class_name" in item:
                found.append(item)
            stack.extend(item.values())
    return found


@pytest.fixture
def tiny() -> None:
    pytest.importorskip("tensorflow", reason="needs TensorFlow (extra: train)")
    from tests import tiny_backbone

    tiny_backbone.register()


def inputs(n: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"image": rng.random((n, SIZE, SIZE, 1), np.float32), "male": (rng.random((n, 1)) > 0.5).astype(np.float32)}


# --- 1: the archive's own architecture is never built --------------------------------------------------------

@pytest.mark.tensorflow
def test_a_declared_layer_is_never_built_only_the_weights_are_read(tiny: None, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # probe: a 64 KB file declaring Dense(75000) over a flattened image made Keras allocate 10 GB (initializers
    # of a 3 GB kernel) before it found the weights did not fit; here a harmless odd width, seen as it is built
    import keras

    from boneage.backbones import load_keras_model
    from boneage.training.train import load_saved

    tiny_keras(tmp_path / "src" / "best.keras")

    def widen(config: Any) -> None:
        (layer,) = layers_named(config, "head_dense")
        layer["config"]["units"] = 4321

    wide = edited(tmp_path / "src" / "best.keras", tmp_path / "src" / "wide.keras", widen)
    built: list[int] = []
    real = keras.layers.Dense.build

    def spy(self: Any, shape: Any) -> Any:
        built.append(self.units)
        return real(self, shape)

    monkeypatch.setattr(keras.layers.Dense, "build", spy)
    model = load_keras_model(wide, "tiny_cnn", SIZE)  # the stored weights are the tiny_cnn's: they load
    assert 4321 not in built and model.get_layer("head_dense").units == 64
    assert load_saved(wide, "cannot load") is not None  # the run's config beside it names the backbone
    assert 4321 not in built


@pytest.mark.tensorflow
def test_the_weights_and_the_output_scale_are_the_files(tiny: None, tmp_path: Path) -> None:
    from boneage.backbones import load_keras_model

    saved = tiny_keras(tmp_path / "run" / "best.keras", age_mean=90.0, age_std=20.0)
    x = inputs()
    saved.get_layer("head_out").set_weights([np.full((64, 1), 0.01, np.float32), np.ones(1, np.float32)])
    saved.save(tmp_path / "run" / "best.keras")
    loaded = load_keras_model(tmp_path / "run" / "best.keras", "tiny_cnn", SIZE)
    assert np.allclose(np.asarray(loaded(x, training=False)), np.asarray(saved(x, training=False)), atol=1e-4)
    assert loaded.get_layer("boneage_months").offset == 90.0  # not the builder's default of 127


@pytest.mark.tensorflow
def test_compressed_weights_are_checked_from_memory_stored_ones_in_place(tiny: None, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # h5py read a DEFLATE member through zipfile, each backward seek decompressing it again: 10 s against 1.4 s
    import h5py

    from boneage.backbones import load_keras_model

    saved = tiny_keras(tmp_path / "run" / "best.keras")
    deflated = tmp_path / "run" / "deflated.keras"
    with zipfile.ZipFile(tmp_path / "run" / "best.keras") as zin, \
            zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as zout:
        for name in zin.namelist():
            zout.writestr(name, zin.read(name))
    stored = edited(tmp_path / "run" / "best.keras", tmp_path / "run" / "stored.keras")
    opened: list[str] = []
    real = h5py.File

    def spy(name: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(type(name).__name__)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(h5py, "File", spy)
    x = inputs()
    for path in (deflated, stored):
        loaded = load_keras_model(path, "tiny_cnn", SIZE)
        assert np.allclose(np.asarray(loaded(x, training=False)), np.asarray(saved(x, training=False)), atol=1e-5)
    assert opened[0] == "BytesIO" and "ZipExtFile" in opened  # deflated: read once into memory; stored: in place


@pytest.mark.tensorflow
def test_weights_that_do_not_fit_are_the_callers_typed_error(tiny: None, tmp_path: Path) -> None:
    from keras import layers

    from boneage.backbones import build_model, load_keras_model
    from boneage.runtimes.tensorflow import TensorFlowRuntime
    from boneage.training.train import load_saved
    from tests.helpers import tiny_card

    other = tmp_path / "run" / "best.keras"
    tiny_keras(other)
    build_model("tiny_cnn", SIZE, lambda image: layers.GlobalAveragePooling2D()(layers.Conv2D(8, 3)(image)),
                head_units=32).save(other)  # another network under the same backbone name
    with pytest.raises(InvalidModelError, match="does not hold the weights of a tiny_cnn model"):
        load_keras_model(other, "tiny_cnn", SIZE)
    with pytest.raises(ConfigError, match="cannot start from .*does not hold the weights"):
        load_saved(other, f"cannot start from {other}")
    card = tiny_card(SIZE).model_copy(update={"backbone": "tiny_cnn"})
    with pytest.raises(InvalidModelError, match="does not hold the weights"):
        TensorFlowRuntime(other.with_suffix(".onnx"), card)


@pytest.mark.tensorflow
def test_a_stored_weight_of_a_shape_the_model_lacks_is_refused_unread(tiny: None, tmp_path: Path) -> None:
    # Keras reads a stored weight whole before comparing its shape: a compressed dataset declaring 64 MB
    # of fill value costs 64 MB (Keras lets up to 4 GiB through)
    import h5py

    from boneage.backbones import load_keras_model

    source = tmp_path / "run" / "best.keras"
    tiny_keras(source)
    with zipfile.ZipFile(source) as archive:
        (tmp_path / "w.h5").write_bytes(archive.read("model.weights.h5"))
    with h5py.File(tmp_path / "w.h5", "a") as store:
        group = store["layers/dense_1/vars"] if "layers/dense_1/vars" in store else store.require_group("layers/x/vars")
        del group["0"]
        group.create_dataset("0", shape=(4096, 4096), dtype="f4", chunks=(256, 256), compression="gzip")
    bomb = edited(source, tmp_path / "run" / "bomb.keras", weights=(tmp_path / "w.h5").read_bytes())
    assert bomb.stat().st_size < 1_000_000  # the weight alone declares 64 MB
    with pytest.raises(InvalidModelError, match=r"shape \(4096, 4096\), which no variable of the tiny_cnn model has"):
        load_keras_model(bomb, "tiny_cnn", SIZE)


@pytest.mark.tensorflow
@pytest.mark.parametrize("precision", ["float32", "mixed_bfloat16"])  # real runs train in mixed_bfloat16
def test_resume_restores_the_optimizer_into_its_own_model(tiny: None, tmp_path: Path, precision: str) -> None:
    from boneage.training.config import TrainConfig
    from boneage.training.data import Record
    from boneage.training.train import build_and_compile, resume_model

    config = TrainConfig.model_validate({"backbone": "tiny_cnn", "input_size": SIZE, "output_dir": str(tmp_path / "run"),
                                         "sources": [{"labels": "x.csv", "images": "x"}], "precision": precision})
    records = [Record(str(i), Path(f"{i}.png"), 100.0 + i, bool(i % 2)) for i in range(4)]
    model = build_and_compile(config, records, steps_per_epoch=2)
    x = inputs(4)
    model.fit(x, np.array([[100.0], [110.0], [120.0], [130.0]], np.float32), epochs=1, batch_size=2, verbose=0)
    checkpoint = tmp_path / "run" / "checkpoint.keras"
    checkpoint.parent.mkdir()
    model.save(checkpoint)
    resumed = resume_model(config, checkpoint, records, 2)
    assert int(resumed.optimizer.iterations.numpy()) == 2
    assert all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(model.optimizer.variables, resumed.optimizer.variables, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), resumed.get_weights(), strict=True))
    from tests import tiny_backbone

    tiny_backbone.build(SIZE).save(tmp_path / "run" / "bare.keras")  # the same network, no optimizer state
    with pytest.raises(ConfigError, match="holds 0 optimizer variables.*start a new run"):
        resume_model(config, tmp_path / "run" / "bare.keras", records, 2)


def test_open_model_checks_a_run_archive_once_before_its_runtime(tmp_path: Path, models_dir: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"backbone": "tiny_cnn", "input_size": SIZE}))
    with zipfile.ZipFile(run / "best.keras", "w") as archive:
        for name in ("metadata.json", "config.json", "model.weights.h5"):
            archive.writestr(name, b"{}")
    model = open_model(run / "best.keras")
    assert model.card.backbone == "tiny_cnn" and model.card.keras_sha256 is None and model.entry is None


# --- 2: the ZIP64 end record zipfile uses is the one checked --------------------------------------------------

def zip64_pair(path: Path, count: int) -> Path:
    """The probe's archive: a benign ZIP64 record (3 members) where the locator points, the real one (``count``
    members) just before the locator, where zipfile reads."""
    def record(entries: int, size: int) -> bytes:
        return struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, size, 56)

    entry = struct.pack("<4s4B4HL2L5H2L", b"PK\x01\x02", 20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0) + b"a"
    directory = entry * count
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, 0, 1)  # points at offset 0: the benign record
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    path.write_bytes(record(3, 100) + directory + record(count, len(directory)) + locator + end)
    return path


def zip64_honest(path: Path) -> Path:
    """A real 3-member archive whose end record is ZIP64 (record and locator where both readers look)."""
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("metadata.json", "config.json", "model.weights.h5"):
            archive.writestr(name, b"{}")
    data = path.read_bytes()
    entries, size, offset = struct.unpack("<HII", data[-22 + 10 : -22 + 20])
    start = len(data) - 22
    record = struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, size, offset)
    locator = struct.pack("<4sLQL", b"PK\x06\x07", 0, start, 1)
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    path.write_bytes(data[:start] + record + locator + end)
    return path


def test_the_zip64_record_zipfile_reads_is_checked_before_zipfile_reads_the_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # probe: 2,000,000 members (94 MB) passed the 256 KiB directory check: 811 MB and 18 s before the refusal
    opened: list[object] = []
    real = zipfile.ZipFile

    def spy(*args: Any, **kwargs: Any) -> Any:
        opened.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(zipfile, "ZipFile", spy)
    with pytest.raises(InvalidModelError, match="ZIP64 locator points at offset 0, but its ZIP64 end record is at"):
        check_keras_file(zip64_pair(tmp_path / "pair.keras", 5000))
    assert not opened  # refused from its end records: zipfile never read the 5,000 entries
    honest = zip64_honest(tmp_path / "honest.keras")
    assert [i.filename for i in real(honest).infolist()] == ["metadata.json", "config.json", "model.weights.h5"]
    check_keras_file(honest)  # a well-formed ZIP64 archive still passes
    assert opened


def test_a_zip64_locator_without_its_record_is_refused(tmp_path: Path) -> None:
    data = zip64_honest(tmp_path / "a.keras").read_bytes()
    cut = data[:-22 - 20 - 56] + b"\0" * 56 + data[-22 - 20:]  # the record zeroed: zipfile would fall back
    (tmp_path / "b.keras").write_bytes(cut)
    with pytest.raises(InvalidModelError, match="ZIP64 locator without its end record"):
        check_keras_file(tmp_path / "b.keras")


def test_running_out_of_memory_reading_the_directory_is_the_files_typed_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = zip64_honest(tmp_path / "m.keras")

    def exhausted(*args: Any, **kwargs: Any) -> Any:
        raise MemoryError

    monkeypatch.setattr(zipfile, "ZipFile", exhausted)
    with pytest.raises(InvalidModelError, match="ran out of memory"):
        check_keras_file(path)
    with pytest.raises(ConfigError, match="ran out of memory"):
        check_keras_file(path, ConfigError)


# --- 6: a registered .keras is checked against its registry sha256 ---------------------------------------------

def registered_keras(models_dir: Path, sha256: str) -> Path:
    (models_dir / "config.json").write_text(json.dumps({"backbone": "tiny_cnn", "input_size": SIZE}))
    path = models_dir / "best.keras"
    with zipfile.ZipFile(path, "w") as archive:
        for name in ("metadata.json", "config.json", "model.weights.h5"):
            archive.writestr(name, b"{}")
    registry = load_registry(models_dir)
    registry.models.append(RegistryEntry(name="kerasrel", version="1.0.0", file="best.keras", size=path.stat().st_size,
                                         sha256=sha256 or hashlib.sha256(path.read_bytes()).hexdigest(),
                                         backbone="tiny_cnn"))
    save_registry(registry, models_dir)
    return path


def test_a_registered_keras_is_loaded_by_name_only_with_its_sha256(models_dir: Path) -> None:
    registered_keras(models_dir, "0" * 64)
    with pytest.raises(ChecksumMismatchError, match="expected sha256 0000"):
        open_model("kerasrel")
    with pytest.raises(ChecksumMismatchError):
        open_model(models_dir / "best.keras")  # the registered file by its path: the same check


def test_a_registered_keras_carries_its_sha256_to_the_runtime(models_dir: Path) -> None:
    path = registered_keras(models_dir, "")
    model = open_model("kerasrel")
    assert model.card.keras_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()  # what the runtime loads
    assert model.entry is None  # a run model is never a known release


@pytest.mark.tensorflow
def test_the_runtime_builds_the_backbone_with_the_options_its_card_or_run_names(tiny: None, tmp_path: Path) -> None:
    from boneage.models import card_from_run
    from boneage.runtimes.tensorflow import TensorFlowRuntime
    from tests.helpers import tiny_card

    path = tmp_path / "run" / "best.keras"
    tiny_keras(path, sex_units=8)
    plain = tiny_card(SIZE).model_copy(update={"backbone": "tiny_cnn"})
    with pytest.raises(InvalidModelError, match="does not hold the weights"):
        TensorFlowRuntime(path.with_suffix(".onnx"), plain)  # the default sex_units=16 does not fit
    card = plain.model_copy(update={"notes": {"backbone_options": {"sex_units": 8}}})  # as export writes it
    assert TensorFlowRuntime(path.with_suffix(".onnx"), card).model.get_layer("sex_dense").units == 8
    (path.parent / "config.json").write_text(json.dumps({"backbone": "tiny_cnn", "input_size": SIZE,
                                                         "backbone_options": {"sex_units": 8}}))
    assert card_from_run(path).notes == {"backbone_options": {"sex_units": 8}}  # a run's config, likewise


def test_a_weight_stored_in_a_chunk_far_larger_than_itself_is_refused_unread(tiny: None, tmp_path: Path) -> None:
    """Probe 14: a weight of a shape the model has, in one gzip chunk of 2**26 elements (HDF5 inflates a chunk
    whole: 256 MB for a few floats; the probe's 2**29 took 2.8 GB)."""
    import h5py

    from boneage.backbones import load_keras_model

    source = tmp_path / "run" / "best.keras"
    tiny_keras(source)
    with zipfile.ZipFile(source) as archive:
        (tmp_path / "w.h5").write_bytes(archive.read("model.weights.h5"))
    with h5py.File(tmp_path / "w.h5", "a") as store:
        names: list[str] = []
        store.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
        name = next(n for n in names if n.startswith("layers/"))
        value = store[name][()]
        del store[name]
        store.create_dataset(name, data=value, maxshape=(None,) * value.ndim,
                             chunks=(2**26,) + value.shape[1:], compression="gzip")
    bomb = edited(source, tmp_path / "run" / "chunk.keras", weights=(tmp_path / "w.h5").read_bytes())
    with pytest.raises(InvalidModelError, match="is stored in chunks of"):
        load_keras_model(bomb, "tiny_cnn", SIZE)
