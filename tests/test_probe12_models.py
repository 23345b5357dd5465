"""Probe 12, findings 2, 3, 4, 5 and 8: a .keras archive is bounded before Keras opens it; plugin code that
calls sys.exit(), recurses or runs out of memory fails as the plugin's typed error; a plugin step's output
is checked; Pillow's and libpng's warnings stay quiet; a registered keras_file stays in the models folder
and is loaded from the bytes that were hashed."""

from __future__ import annotations

import hashlib
import json
import struct
import threading
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pydantic import BaseModel, field_validator

from boneage import BoneAgeEstimator, hookimpl, models, plugins
from boneage.cli.main import main
from boneage.errors import (
    ChecksumMismatchError,
    ConfigError,
    InvalidModelError,
    ModelOutputError,
    PluginError,
    PreprocessError,
    failures_as,
)
from boneage.imageio import read_image
from boneage.models import load_registry, open_model, save_registry
from boneage.preprocess import PreprocessConfig, StepConfig, build_pipeline
from boneage.preprocess.pipeline import Notes
from boneage.specs import ReferenceSpec, RuntimeSpec, StepSpec
from tests.helpers import register, synthetic_radiograph, tiny_card, write_png, write_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def add(plugin: object) -> None:
    plugins.get_plugins().register(plugin, "probe12 1.0", name=type(plugin).__name__)


# --- 2: a .keras archive is checked from its central directory before Keras opens it -----------------------

def check_keras_file(path: Path, error: type[Exception] = InvalidModelError) -> None:
    from boneage.models import check_keras_file as check  # new here: imported in the tests, so each fails alone before

    check(path, error)  # type: ignore[arg-type]


def keras_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=compression, compresslevel=1 if compression else None) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def run_folder(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"backbone": "densenet121", "input_size": 100}))
    return run


def test_a_keras_bomb_is_refused_before_keras_opens_it(tmp_path: Path, models_dir: Path) -> None:
    # the probe's file: a few KB whose config.json inflates to 20 MiB (1.2 GB in the probe: 3 GB, 27 s)
    bomb = keras_zip(run_folder(tmp_path) / "best.keras", {"metadata.json": b"{}", "config.json": b" " * (20 << 20),
                                                           "model.weights.h5": b""}, zipfile.ZIP_DEFLATED)
    assert bomb.stat().st_size < 100_000
    with pytest.raises(InvalidModelError, match=r"its config\.json unpacks to 20,971,520 bytes, more than"):
        open_model(bomb)
    with pytest.raises(InvalidModelError, match="config.json unpacks"):
        BoneAgeEstimator(bomb)


@pytest.mark.parametrize("case", ["ratio", "members", "traversal", "absolute", "not a zip", "total", "size"])
def test_what_a_keras_archive_may_hold_is_bounded(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.keras"
    expected = {
        "ratio": r"'model\.weights\.h5' unpacks to 8,388,608 bytes from .* \(more than 100 times",
        "members": "declares 65 members, more than the 64",
        "traversal": r"member '\.\./evil\.json' names a path outside the archive",
        "absolute": r"member '/etc/evil' names a path outside the archive",
        "not a zip": "no ZIP end record",
        "total": r"its members unpack to 5,242,880 bytes, more than the 3,145,728 allowed",
        "size": "larger than 1,000 bytes",
    }[case]
    if case == "ratio":  # HDF5 weights barely compress: 8 MiB of zeros to a few KB is a bomb
        keras_zip(path, {"config.json": b"{}", "model.weights.h5": bytes(8 << 20)}, zipfile.ZIP_DEFLATED)
    elif case == "members":
        keras_zip(path, {f"assets/{i}": b"" for i in range(65)})
    elif case in ("traversal", "absolute"):
        keras_zip(path, {"config.json": b"{}", "../evil.json" if case == "traversal" else "/etc/evil": b"{}"})
    elif case == "not a zip":
        path.write_text("this is not a model")
    elif case == "total":  # packed 4:1, within the ratio, but more unpacked than a model may be
        monkeypatch.setattr(models, "MAX_MODEL_BYTES", 3 << 20)
        rng = np.random.default_rng(0)
        keras_zip(path, {"model.weights.h5": rng.integers(0, 4, 5 << 20, dtype=np.uint8).tobytes()}, zipfile.ZIP_DEFLATED)
        assert path.stat().st_size < 3 << 20
    else:
        monkeypatch.setattr(models, "MAX_MODEL_BYTES", 1000)
        keras_zip(path, {"model.weights.h5": bytes(2000)})
    with pytest.raises(InvalidModelError, match=expected):
        check_keras_file(path)
    with pytest.raises(ConfigError, match=expected):  # as training reports it (--init-weights)
        check_keras_file(path, ConfigError)


def test_a_keras_end_record_declaring_a_huge_directory_is_refused_before_zipfile_reads_it(tmp_path: Path) -> None:
    path = keras_zip(tmp_path / "m.keras", {"config.json": b"{}"})
    data = bytearray(path.read_bytes())
    end = data.rfind(b"PK\x05\x06")
    data[end + 12 : end + 16] = struct.pack("<I", 500 << 20)  # the central directory's size: 500 MB
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidModelError, match="central directory declares 524,288,000 bytes"):
        check_keras_file(path)


def test_the_shipped_keras_model_passes_the_checks() -> None:
    registry = load_registry(ROOT / "exported")
    shipped = next(e for e in registry.models if e.ref == registry.default)
    assert shipped.keras_file, "the shipped release carries its Keras weights (TensorFlow runtime, warm restarts)"
    path = ROOT / "exported" / shipped.keras_file
    check_keras_file(path)  # central directory only (5 ms here; timings belong in benchmarks)
    with zipfile.ZipFile(path) as archive:  # what the limits were set from: stored, not compressed
        assert all(i.compress_size == i.file_size for i in archive.infolist())


# --- 8: a registered keras_file stays in the models folder ---------------------------------------------

def test_a_registered_keras_file_cannot_lead_out_of_the_models_folder(tmp_path: Path, models_dir: Path) -> None:
    register(write_tiny_model(tmp_path / "tiny.onnx"), models_dir)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for boneage to open")
    (models_dir / "tiny-1.0.0.keras").symlink_to(secret)  # the same link as `file` is refused (row 60)
    registry = load_registry(models_dir)
    registry.models[0].keras_file = "tiny-1.0.0.keras"
    registry.models[0].keras_sha256 = "0" * 64
    save_registry(registry, models_dir)
    with pytest.raises(InvalidModelError, match="'tiny-1.0.0.keras' leads outside the models folder"):
        BoneAgeEstimator("tiny", runtime="tensorflow")


# --- 3: plugin code that exits, recurses or runs out of memory fails as its plugin's typed error ---------

FAULT: dict[str, BaseException] = {}
FLAKY_WIDTH = 333


class FlakyPlugin:
    """A step that raises FAULT["step"] on an image 333 pixels wide, and a runtime that raises FAULT["runtime"]
    on its second call, FAULT["load"] when loaded; a reference that raises FAULT["reference"]."""

    @hookimpl
    def boneage_register_preprocess_steps(self) -> list[StepSpec]:
        def apply(image: np.ndarray, trace: Any) -> np.ndarray:
            if image.shape[1] == FLAKY_WIDTH:
                raise FAULT["step"]
            return image

        return [StepSpec(name="flaky", build=lambda p: apply, doc="fails on one image")]

    @hookimpl
    def boneage_register_runtimes(self) -> list[RuntimeSpec]:
        class Runtime:
            name = "flaky"
            calls = 0

            def predict(self, images: np.ndarray, male: np.ndarray) -> np.ndarray:
                self.calls += 1
                if self.calls == 2:
                    raise FAULT["runtime"]
                return np.full(len(images), 42.0, np.float32)

        def load(model: Any, threads: Any) -> Runtime:
            if "load" in FAULT:
                raise FAULT["load"]
            return Runtime()

        return [RuntimeSpec(name="flaky", load=load, doc="fails on its second call")]

    @hookimpl
    def boneage_register_references(self) -> list[ReferenceSpec]:
        def load() -> Any:
            raise FAULT["reference"]

        return [ReferenceSpec(name="flaky", load=load, doc="never loads")]


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> dict[str, BaseException]:
    FAULT.clear()
    add(FlakyPlugin())
    yield FAULT
    FAULT.clear()


def flaky_model(tmp_path: Path) -> Path:
    steps = (StepConfig(name="grayscale"), StepConfig(name="flaky"), *PreprocessConfig.default(64).steps[1:])
    return write_tiny_model(tmp_path / "flaky.onnx", card=tiny_card(64, preprocessing=PreprocessConfig(steps=steps)))


FAULTS = [SystemExit(3), RecursionError("maximum recursion depth exceeded"), MemoryError(), GeneratorExit()]


@pytest.mark.parametrize("fault", FAULTS, ids=lambda e: type(e).__name__)
def test_a_step_that_exits_fails_its_own_image_and_the_batch_keeps_the_rest(
        fault: BaseException, flaky: dict[str, BaseException], tmp_path: Path, models_dir: Path) -> None:
    flaky["step"] = fault
    estimator = BoneAgeEstimator(flaky_model(tmp_path))
    images = [synthetic_radiograph(), synthetic_radiograph(w=FLAKY_WIDTH), synthetic_radiograph(seed=1)]
    results = estimator.predict_many(images, [True] * 3)
    assert [type(r).__name__ for r in results] == ["Prediction", "PreprocessError", "Prediction"]
    assert "preprocessing step 'flaky' failed on this image" in str(results[1])
    if isinstance(fault, SystemExit):
        assert "it called sys.exit(3)" in str(results[1])


def test_a_step_that_exits_is_one_failed_row_in_the_cli(flaky: dict[str, BaseException], tmp_path: Path,
                                                         models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flaky["step"] = SystemExit(3)
    files = [write_png(tmp_path / "a.png", synthetic_radiograph()),
             write_png(tmp_path / "w333.png", synthetic_radiograph(w=FLAKY_WIDTH)),
             write_png(tmp_path / "b.png", synthetic_radiograph(seed=1))]
    code = main(["predict", *map(str, files), "--sex", "m", "--model", str(flaky_model(tmp_path)), "--json"])
    out, err = capsys.readouterr()
    rows = json.loads(out)  # was: exit 3, the plugin's own code, and nothing printed
    assert code == 2 and ["bone_age_months" in row for row in rows] == [True, False, True]
    assert "it called sys.exit(3)" in json.dumps(rows[1]) and "w333.png" in err


def test_a_runtime_that_exits_is_a_model_error_and_the_finished_batches_are_kept(
        flaky: dict[str, BaseException], tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flaky["runtime"] = SystemExit(5)
    images = [synthetic_radiograph(seed=s) for s in range(3)]
    with pytest.raises(ModelOutputError, match=r"runtime 'flaky' failed .*SystemExit: it called sys.exit\(5\)"):
        BoneAgeEstimator(tiny_model, runtime="flaky").predict_many(images, [True] * 3, batch_size=1)
    files = [str(write_png(tmp_path / f"{i}.png", image)) for i, image in enumerate(images)]
    code = main(["predict", *files, "--sex", "m", "--model", str(tiny_model), "--runtime", "flaky",
                 "--batch-size", "1", "--json"])
    out, err = capsys.readouterr()
    assert code == 3 and "sys.exit(5)" in err  # was: exit 5 ("missing dependency"), no output at all
    assert "stopped after 1 of 3" in err


@pytest.mark.parametrize("fault", FAULTS[:3], ids=lambda e: type(e).__name__)
def test_a_runtime_or_reference_that_exits_when_loaded_is_a_plugin_error(
        fault: BaseException, flaky: dict[str, BaseException], tiny_model: Path) -> None:
    flaky["load"] = fault
    with pytest.raises(PluginError, match=f"runtime 'flaky' could not load .*{type(fault).__name__}"):
        BoneAgeEstimator(tiny_model, runtime="flaky")
    del flaky["load"]
    flaky["reference"] = fault
    with pytest.raises(PluginError, match=f"reference 'flaky' could not be loaded: {type(fault).__name__}"):
        BoneAgeEstimator(tiny_model, reference="flaky")


class StrictParams(BaseModel):
    level: int = 0

    @field_validator("level")
    @classmethod
    def exits(cls, value: int) -> int:
        raise FAULT["validator"]


class StrictPlugin:
    @hookimpl
    def boneage_register_preprocess_steps(self) -> list[StepSpec]:
        return [StepSpec(name="strict", build=lambda p: (lambda image, trace: image), params=StrictParams, doc="x")]


@pytest.mark.parametrize("fault", [SystemExit(9), RecursionError("maximum recursion depth exceeded"),
                                   TypeError("pydantic lets this one out")], ids=lambda e: type(e).__name__)
def test_a_params_validator_that_exits_is_a_plugin_error(fault: BaseException) -> None:
    FAULT["validator"] = fault
    add(StrictPlugin())
    try:
        with pytest.raises(PluginError, match=f"the parameters of step 'strict' could not be checked: {type(fault).__name__}"):
            build_pipeline(PreprocessConfig(steps=(StepConfig(name="strict", params={"level": 1}),)))
    finally:
        FAULT.clear()


def test_keyboard_interrupt_in_plugin_code_is_still_the_users_interrupt(flaky: dict[str, BaseException],
                                                                         tmp_path: Path, models_dir: Path) -> None:
    flaky["step"] = KeyboardInterrupt()
    pipeline = build_pipeline(PreprocessConfig(steps=(StepConfig(name="flaky"),)))
    with pytest.raises(KeyboardInterrupt):
        pipeline(synthetic_radiograph(w=FLAKY_WIDTH))
    with pytest.raises(KeyboardInterrupt), failures_as(PluginError, "x"):
        raise KeyboardInterrupt
    with pytest.raises(PluginError, match=r"x: SystemExit: it called sys.exit\('bye'\)"), failures_as(PluginError, "x"):
        raise SystemExit("bye")


# --- 4: a plugin step's output is checked: values, shape and size ------------------------------------------

OUTPUT: dict[str, Callable[[np.ndarray, Any], np.ndarray]] = {}


class OddStepPlugin:
    @hookimpl
    def boneage_register_preprocess_steps(self) -> list[StepSpec]:
        return [StepSpec(name="odd", build=lambda p: (lambda image, trace: OUTPUT["odd"](image, trace)), doc="odd")]


ODD_OUTPUTS = {
    "nan": (lambda image, trace: np.full(image.shape, np.nan, np.float32), "NaN or infinite values"),
    "inf": (lambda image, trace: np.where(image > 100, np.inf, 1.0), "NaN or infinite values"),
    "negative": (lambda image, trace: np.full(image.shape, -1.0, np.float32), r"values from -1 to -1, not an image"),
    "past 16 bits": (lambda image, trace: image.astype(np.uint32) + 70_000, "values from 70000 to 70[0-9]+, not an image"),
    "int64 1e12": (lambda image, trace: np.full(image.shape, 10**12, np.int64), r"values from 1e\+12 to 1e\+12"),
    "60000x60000 view": (lambda image, trace: np.broadcast_to(np.uint8(128), (60000, 60000)),
                         "a 60000x60000 image of 1 uint8 channel"),
    "no pixels": (lambda image, trace: image[:0], r"an array of shape \(0, 240\)"),
    "7 channels": (lambda image, trace: np.zeros((*image.shape[:2], 7), np.uint8), r"shape \(300, 240, 7\)"),
}


@pytest.mark.parametrize("case", list(ODD_OUTPUTS))
def test_a_plugin_steps_output_is_checked(case: str, radiograph: np.ndarray) -> None:
    OUTPUT["odd"], message = ODD_OUTPUTS[case]
    add(OddStepPlugin())
    pipeline = build_pipeline(PreprocessConfig(steps=(StepConfig(name="odd"), StepConfig(name="clahe"))))
    with pytest.raises(PreprocessError, match=f"preprocessing step 'odd' returned .*{message}"):
        pipeline.raw(radiograph)  # NaN was a black image after clahe; the view took 7.1 GB once used


def unsharp(image: np.ndarray, trace: Any) -> np.ndarray:
    """The mobilenet plugin's step at its strongest (amount 3), on a float image: it overshoots both ways."""
    return np.asarray(cv2.addWeighted(image, 4.0, cv2.GaussianBlur(image, (0, 0), 2.0), -3.0, 0))


def test_plugin_outputs_within_range_and_built_in_overshoot_are_answered(radiograph: np.ndarray) -> None:
    OUTPUT["odd"] = lambda image, trace: image.astype(np.float64) * 257  # 16-bit grey levels as float: fine
    add(OddStepPlugin())
    assert build_pipeline(PreprocessConfig(steps=(StepConfig(name="odd"),))).raw(radiograph).max() > 255
    OUTPUT["odd"] = unsharp  # a sharpening step overshoots below 0 and past 255: still an image
    sharpened = build_pipeline(PreprocessConfig(steps=(StepConfig(name="odd"),))).raw(radiograph.astype(np.float32))
    assert sharpened.min() < 0 and sharpened.max() > 255
    # a built-in step is trusted: a cubic resize in float overshoots below 0 at sharp edges, as before
    sharp = np.zeros((40, 40), np.uint8)
    sharp[10:30, 10:30] = 255
    cubic = StepConfig(name="resize", params={"size": 128, "interpolation": "cubic", "keep_float": True})
    assert build_pipeline(PreprocessConfig(steps=(cubic,))).raw(sharp).min() < 0


def test_a_step_that_warns_without_end_is_bounded(radiograph: np.ndarray) -> None:
    from boneage.preprocess.pipeline import MAX_NOTE_CHARS, MAX_STEP_NOTES

    def chatty(image: np.ndarray, trace: Any) -> np.ndarray:
        for i in range(100_000):
            trace.warn(f"warning {i} " + "x" * 1000)
        trace.warnings.append(12345)  # appended to the list itself, and not text
        trace.applied.extend(["did something"] * 50)
        return image

    OUTPUT["odd"] = chatty
    add(OddStepPlugin())
    notes = Notes(warnings=["read: a note before the step"])
    build_pipeline(PreprocessConfig(steps=(StepConfig(name="odd"),))).raw(radiograph, notes)
    assert notes.warnings[0] == "read: a note before the step"
    assert len(notes.warnings) == 1 + MAX_STEP_NOTES + 1 and len(notes.applied) == MAX_STEP_NOTES + 1
    assert all(len(w) <= MAX_NOTE_CHARS + 40 for w in notes.warnings)
    assert notes.warnings[-1] == "preprocessing step 'odd' gave 99,993 more note(s) of this kind, left out"
    assert notes.applied[-1] == "preprocessing step 'odd' gave 42 more note(s) of this kind, left out"


# --- 5: Pillow's EXIF warnings and libpng's stay quiet, and a valid orientation is kept ----------------------

def exif_block(orientation: int, damaged: bool) -> bytes:
    """A little-endian EXIF: the orientation, and (``damaged``) two tags whose data lie past its end."""
    tags = [struct.pack("<HHIHH", 0x112, 3, 1, orientation, 0)]
    if damaged:
        tags += [struct.pack("<HHII", 0x8769, 4, 1, 9_999_999), struct.pack("<HHII", 0x10F, 2, 100, 99_999)]
    return b"II" + struct.pack("<HI", 42, 8) + struct.pack("<H", len(tags)) + b"".join(tags)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    import zlib

    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def damaged_exif_files() -> dict[str, bytes]:
    gray = synthetic_radiograph()
    jpeg = cv2.imencode(".jpg", gray)[1].tobytes()
    app1 = b"Exif\0\0" + exif_block(6, damaged=True)
    png = cv2.imencode(".png", gray)[1].tobytes()
    return {"jpeg": jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:],
            "png": png[:33] + png_chunk(b"eXIf", exif_block(6, damaged=True)) + png[33:]}


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_a_damaged_exif_keeps_its_valid_orientation_quietly_even_under_w_error(kind: str) -> None:
    data = damaged_exif_files()[kind]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet = read_image(data)
    assert not caught  # "Corrupt EXIF data", "Tag data larger than file" reached the terminal
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # python -W error, pytest's filterwarnings = error
        strict = read_image(data)
    for loaded in (quiet, strict):
        assert loaded.image.shape == (240, 300) and any("EXIF orientation 6 applied" in n for n in loaded.notes)


def test_pillow_quiet_spells_leave_the_warning_filters_as_they_were() -> None:
    data = damaged_exif_files()["jpeg"]
    before = list(warnings.filters)
    failures: list[BaseException] = []

    def read_ten() -> None:
        try:
            for _ in range(10):
                read_image(data)
        except BaseException as exc:  # a thread's exception is otherwise lost, and the test passes
            failures.append(exc)

    threads = [threading.Thread(target=read_ten) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures and warnings.filters == before


def test_libpng_warnings_do_not_reach_the_callers_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    gray = synthetic_radiograph()
    png = cv2.imencode(".png", gray)[1].tobytes()
    end = png.rfind(b"IEND") - 4
    files = [png[:33] + png_chunk(b"eXIf", b"XX\0\0") + png[33:],  # libpng: "eXIf: invalid"
             png[:end] + png_chunk(b"sBIT", b"\x08") + png[end:],  # libpng: "sBIT: out of place"
             png[:33] + png_chunk(b"tEXt", b"\0no keyword") + png_chunk(b"gAMA", struct.pack(">I", 45455)) + png[33:]]
    capfd.readouterr()
    for data in files:
        assert np.array_equal(read_image(data).image, gray)  # the same pixels without the chunks OpenCV ignores
    assert "libpng" not in capfd.readouterr().err


# --- 8: the .keras file is hashed and loaded from the same bytes -------------------------------------------

@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorflow", reason="needs TensorFlow (extra: train)")
    from tests import tiny_backbone

    path = tmp_path_factory.mktemp("keras") / "tiny.keras"
    tiny_backbone.build(32).save(path)
    (path.parent / "config.json").write_text('{"backbone": "tiny_cnn", "input_size": 32}')  # its run's config
    return path


@pytest.mark.tensorflow
def test_the_keras_file_is_loaded_from_the_bytes_that_were_hashed(tiny_keras: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    from boneage.backbones import load_keras_model
    from tests import tiny_backbone

    path = tmp_path / "tiny.keras"
    path.write_bytes(tiny_keras.read_bytes())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    seen: list[tuple[Path, str]] = []
    real = keras.Model.load_weights

    def swapping(model: Any, source: Any, **options: Any) -> Any:  # the file is swapped just as Keras reads it
        seen.append((Path(source), hashlib.sha256(Path(source).read_bytes()).hexdigest()))
        path.write_bytes(b"swapped for something else")
        return real(model, source, **options)

    tiny_backbone.register()
    monkeypatch.setattr(keras.Model, "load_weights", swapping)
    assert load_keras_model(path, "tiny_cnn", 32, sha256=digest) is not None
    copy, loaded = seen[0]
    assert copy != path and loaded == digest and not copy.exists()  # a private copy, removed after
    with pytest.raises(ChecksumMismatchError, match="does not match its registry entry or card"):
        load_keras_model(path, "tiny_cnn", 32, sha256=digest)


@pytest.mark.tensorflow
def test_training_and_the_tensorflow_runtime_refuse_a_keras_bomb(tiny_keras: Path, tmp_path: Path) -> None:
    from boneage.runtimes.tensorflow import TensorFlowRuntime
    from boneage.training.train import load_saved

    bomb = keras_zip(tmp_path / "bomb.keras", {"metadata.json": b"{}", "config.json": b" " * (20 << 20)},
                     zipfile.ZIP_DEFLATED)
    with pytest.raises(ConfigError, match="cannot start from .*config.json unpacks to 20,971,520 bytes"):
        load_saved(bomb, f"cannot start from {bomb}")
    with pytest.raises(InvalidModelError, match="config.json unpacks to 20,971,520 bytes"):
        TensorFlowRuntime(bomb.with_suffix(".onnx"), tiny_card(32))
    from tests import tiny_backbone

    tiny_backbone.register()
    assert load_saved(tiny_keras, "cannot start") is not None  # a real one still loads (into its run's backbone)
