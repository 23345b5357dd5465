"""What the thirteenth outside probe found in the command line and the plugin and image API: ``--resume`` of a
CSV cut inside a multi-line cell (finding 5), plugin output on stdout and Python warnings on the terminal
(finding 7), a plugin step writing into the caller's array, and PIL images (section 8)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from PIL import Image

from boneage import BoneAgeEstimator, hookimpl, plugins
from boneage.cli.main import main
from boneage.containment import MAX_WARNINGS, ContainedStdout, contained_output, plugin_code
from boneage.errors import (
    ImageReadError,
    ImageTooLargeError,
    ImageTooSmallError,
    PluginError,
    PreprocessError,
    UnsupportedImageError,
)
from boneage.imageio import read_image
from boneage.preprocess import PreprocessConfig, StepConfig, build_pipeline
from boneage.rows import COLUMNS
from boneage.specs import StepSpec
from tests.helpers import synthetic_radiograph, tiny_card, write_png, write_tiny_model

ROOT = Path(__file__).resolve().parents[1]


def step_model(tmp_path: Path, step: str) -> Path:
    """A tiny model whose preprocessing runs ``step`` after grayscale (on the caller's 2-D uint8 array)."""
    steps = (StepConfig(name="grayscale"), StepConfig(name=step), *PreprocessConfig.default(64).steps[1:])
    return write_tiny_model(tmp_path / f"{step}.onnx", card=tiny_card(64, preprocessing=PreprocessConfig(steps=steps)))


# --- 5: --resume of a CSV whose last row was cut inside a multi-line cell -----------------------------------

def csv_records(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))


def cut_inside(data: bytes, needle: bytes, after: int) -> bytes:
    """``data`` up to ``after`` bytes past the start of ``needle`` (in the last row that holds it)."""
    return data[: data.rindex(needle) + after]


@pytest.mark.parametrize("where", ["after the newline", "inside the second line", "between CR and LF"])
def test_resume_continues_a_csv_cut_inside_a_file_name_with_a_newline(
        where: str, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = write_png(tmp_path / "ok.png", synthetic_radiograph())
    odd = write_png(tmp_path / "x\ny.png", synthetic_radiograph(seed=1))  # a file name with a newline: legal on Linux
    last = write_png(tmp_path / "z.png", synthetic_radiograph(seed=2))
    out = tmp_path / "r.csv"
    common = ["--sex", "m", "--model", str(tiny_model), "--output", str(out)]
    assert main(["predict", str(first), str(odd), *common]) == 0
    data = out.read_bytes()
    cut = {"after the newline": cut_inside(data, b'"' + str(odd).encode(), len(str(tmp_path)) + 4),
           "inside the second line": cut_inside(data, b"y.png", 3),
           "between CR and LF": data[:-1]}[where]
    assert cut.endswith(b"\n") == (where == "after the newline")
    out.write_bytes(cut)  # a kill while the row was written
    capsys.readouterr()
    assert main(["predict", str(first), str(odd), str(last), *common, "--resume"]) == 0, capsys.readouterr().err
    assert "2 to go" in capsys.readouterr().err  # was: "cannot read the results in r.csv: list index out of range", exit 2
    records = csv_records(out)
    assert records[0] == list(COLUMNS) and all(len(r) == len(COLUMNS) for r in records)
    assert sorted(r[0] for r in records[1:]) == sorted(map(str, (first, odd, last)))


class NoteWithNewline:
    """A step whose warning holds a newline (a model name could too, before model cards refused it)."""

    @hookimpl
    def boneage_register_preprocess_steps(self) -> list[StepSpec]:
        def apply(image: np.ndarray, trace: Any) -> np.ndarray:
            trace.warn("first line\nsecond line")
            return image

        return [StepSpec(name="two_lines", build=lambda p: apply, doc="warns in two lines")]


def test_resume_continues_a_csv_cut_inside_a_warning_with_a_newline(
        tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plugins.get_plugins().register(NoteWithNewline(), "probe13 1.0", name="NoteWithNewline")
    model = step_model(tmp_path, "two_lines")
    images = [str(write_png(tmp_path / f"r{i}.png", synthetic_radiograph(seed=i))) for i in range(3)]
    out = tmp_path / "r.csv"
    common = ["--sex", "f", "--model", str(model), "--output", str(out)]
    assert main(["predict", *images[:2], *common]) == 0
    out.write_bytes(cut_inside(out.read_bytes(), b"first line\n", len("first line\n")))
    assert main(["predict", *images, *common, "--resume"]) == 0, capsys.readouterr().err
    records = csv_records(out)
    assert sorted(r[0] for r in records[1:]) == sorted(images)
    assert all("first line\nsecond line" in r[COLUMNS.index("warnings")] for r in records[1:])


def test_resume_names_a_malformed_row_before_the_end(tiny_model: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    image = str(write_png(tmp_path / "r.png", synthetic_radiograph()))
    out = tmp_path / "r.csv"
    out.write_text(",".join(COLUMNS) + "\r\nshort,row\r\n" + ",".join([image] + [""] * (len(COLUMNS) - 1)) + "\r\n")
    assert main(["predict", image, "--sex", "m", "--model", str(tiny_model), "--output", str(out), "--resume"]) == 2
    assert f"record 2 of {out} has 2 cells, not {len(COLUMNS)}" in capsys.readouterr().err  # was an IndexError's text


# --- 7: plugin output kept off stdout; Python warnings off the terminal without -v ---------------------------

CHATTY_PLUGIN = '''
import warnings
from boneage import hookimpl
from boneage.specs import StepSpec

print("printed at import")
for i in range(1000):
    warnings.warn(f"warning {i} at import", UserWarning, stacklevel=1)


def build(params):
    def apply(image, trace):
        print("printed by the step", end="")
        print(" on an image")
        for i in range(50):
            warnings.warn(f"step warning {i}", UserWarning)
        return image
    return apply


@hookimpl
def boneage_register_preprocess_steps():
    return [StepSpec(name="p13_chatty", build=build, doc="prints and warns")]
'''


def installed_plugin(tmp_path: Path, name: str, source: str) -> dict[str, str]:
    """An installed plugin (a module and its dist-info on PYTHONPATH), and the environment that loads it."""
    folder = tmp_path / "site"
    info = folder / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (folder / f"{name}.py").write_text(source)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[boneage]\n{name} = {name}\n")
    path = os.pathsep.join(p for p in (str(folder), str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, plugins.DISABLE_AUTOLOAD_ENV: "0", "BONEAGE_DEBUG": "0"}


@pytest.mark.parametrize("verbose", [False, True], ids=["quiet", "-v"])
def test_a_plugins_prints_stay_off_stdout_and_its_warnings_off_the_terminal(verbose: bool, tmp_path: Path,
                                                                             models_dir: Path) -> None:
    env = installed_plugin(tmp_path, "p13chatty", CHATTY_PLUGIN)
    image = write_png(tmp_path / "hand.png", synthetic_radiograph())
    command = [sys.executable, "-m", "boneage", *(["-v"] if verbose else []), "predict", str(image), "--sex", "m",
               "--model", str(step_model(tmp_path, "p13_chatty")), "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(done.stdout)  # was: "printed at import" and a line per image before the JSON
    assert "bone_age_months" in row and "printed" not in done.stdout
    err = done.stderr.splitlines()
    if not verbose:  # was: 1,000 import warnings (2,000 lines) and 50 per image and pipeline run
        assert "printed" not in done.stderr and "UserWarning" not in done.stderr and len(err) < 10, err[:20]
        return
    assert "boneage: plugin code printed: printed at import" in err
    assert "boneage: plugin code printed: printed by the step on an image" in err
    assert sum(line.startswith("boneage: ") and "UserWarning: " in line for line in err) == MAX_WARNINGS
    assert f"boneage: more than {MAX_WARNINGS} Python warnings; the rest are left out" in err
    assert len(err) < 200


def test_plugin_output_in_a_worker_thread_leaves_the_main_threads_output_alone(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """The marks are per thread, so one thread's plugin code and another's results interleave safely, with no
    lock and no process-wide switch (contextlib.redirect_stdout would have moved both)."""
    stream = io.StringIO()
    contained = ContainedStdout(stream)
    monkeypatch.setattr(sys, "stdout", contained)  # as the CLI installs it
    started, printed = threading.Event(), threading.Event()

    def step() -> None:
        with plugin_code():
            contained.write("a plugin's half line")
            started.set()
            assert printed.wait(10)
            contained.write(", ended\n")
            contained.write("and its unended last")

    worker = threading.Thread(target=step)
    with caplog.at_level(logging.INFO, logger="boneage.plugins"):
        worker.start()
        assert started.wait(10), "the worker failed before it printed"
        contained.write('{"results": 1}\n')  # the main thread's output while the worker is inside plugin code
        printed.set()
        worker.join(10)
    assert not worker.is_alive()
    assert stream.getvalue() == '{"results": 1}\n'
    assert [r.getMessage() for r in caplog.records] == ["plugin code printed: a plugin's half line, ended",
                                                        "plugin code printed: and its unended last"]


def test_contained_stdout_answers_what_its_stream_answers() -> None:
    class Colorama:  # colorama's and some IDEs' streams: write returns None
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> None:
            self.text += text

    stream = Colorama()
    contained = ContainedStdout(stream)
    assert contained.write("results\n") is None  # was: TypeError from int(None)
    assert ContainedStdout(io.StringIO()).write("four") == 4
    with plugin_code():
        assert contained.write("a plugin's line\n") == len("a plugin's line\n")
    assert stream.text == "results\n"


def test_a_command_puts_stdout_and_the_warning_hook_back(tiny_model: Path, radiograph_png: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    stdout, hook = sys.stdout, warnings.showwarning
    assert main(["predict", str(radiograph_png), "--sex", "m", "--model", str(tiny_model), "--json"]) == 0
    assert sys.stdout is stdout and warnings.showwarning is hook
    assert json.loads(capsys.readouterr().out)[0]["bone_age_months"] > 0
    with contained_output(verbose=False):  # outside plugin code everything reaches stdout as it is
        assert isinstance(sys.stdout, ContainedStdout)
        print("results")
        sys.stdout.flush()
    assert capsys.readouterr().out == "results\n" and sys.stdout is stdout


# --- 8: a plugin step that writes into the caller's array ----------------------------------------------------

WRITES: dict[str, int] = {}


class WritingPlugin:
    """A step that zeroes its input in place: always, or on images WRITES["width"] pixels wide."""

    @hookimpl
    def boneage_register_preprocess_steps(self) -> list[StepSpec]:
        def apply(image: np.ndarray, trace: Any) -> np.ndarray:
            if image.shape[1] == WRITES.get("width", image.shape[1]):
                image[...] = 0
            return image

        return [StepSpec(name="writes", build=lambda p: apply, doc="writes into its input")]


@pytest.fixture
def writing() -> Iterator[dict[str, int]]:
    WRITES.clear()
    plugins.get_plugins().register(WritingPlugin(), "probe13 1.0", name="WritingPlugin")
    yield WRITES
    WRITES.clear()


MESSAGE = r"preprocessing step 'writes' \(plugin WritingPlugin \(probe13 1.0\)\) writes into the image it is given"


def test_a_step_that_writes_into_its_input_is_a_plugin_error_and_the_callers_array_is_unchanged(
        writing: dict[str, int], tmp_path: Path, models_dir: Path) -> None:
    model = step_model(tmp_path, "writes")
    with pytest.raises(PluginError, match=MESSAGE):  # at load, on the test image
        BoneAgeEstimator(model)
    writing["width"] = 333  # only on some images: the load passes, the image is refused
    estimator = BoneAgeEstimator(model)
    image = synthetic_radiograph(w=333)
    before = image.copy()
    with pytest.raises(PluginError, match=MESSAGE):
        estimator.predict(image, male=True)  # was: the caller's 2-D uint8 array zeroed, and answered 35.9 months
    assert np.array_equal(image, before) and image.flags.writeable
    with pytest.raises(PluginError, match=MESSAGE):
        build_pipeline(PreprocessConfig(steps=(StepConfig(name="writes"),))).raw(image)
    assert np.array_equal(image, before)


class FailingPlugin:
    """A step that raises WRITES["error"] (an exception that mentions read-only, but is no write into its input)."""

    @hookimpl
    def boneage_register_preprocess_steps(self) -> list[StepSpec]:
        def apply(image: np.ndarray, trace: Any) -> np.ndarray:
            raise FAILS[0]

        return [StepSpec(name="fails", build=lambda p: apply, doc="fails")]


FAILS: list[BaseException] = []


@pytest.mark.parametrize("error", [OSError(30, "Read-only file system"), RuntimeError("cache is read-only"),
                                   ValueError("the template is read-only, choose another")])
def test_a_step_failing_with_read_only_in_its_message_fails_that_image_only(error: BaseException) -> None:
    # was: any exception whose text held "read-only" became a PluginError blaming the step, ending the batch
    plugins.get_plugins().register(FailingPlugin(), "probe13 1.0", name="FailingPlugin")
    FAILS[:] = [error]
    pipeline = build_pipeline(PreprocessConfig(steps=(StepConfig(name="fails"),)))
    with pytest.raises(PreprocessError, match="preprocessing step 'fails' failed on this image") as caught:
        pipeline.raw(synthetic_radiograph())
    assert not isinstance(caught.value, PluginError)


def test_numpy_and_opencv_refusals_to_write_are_what_counts_as_writing_into_the_input() -> None:
    from boneage.preprocess.pipeline import wrote_into_input

    image = synthetic_radiograph()
    image.flags.writeable = False
    refusals: list[BaseException] = []
    for write in (lambda: image.__setitem__(0, 1), lambda: np.add(image, 1, out=image),
                  lambda: cv2.GaussianBlur(image, (3, 3), 0, dst=image)):
        try:
            write()
        except Exception as exc:  # noqa: BLE001 - what NumPy and OpenCV raise
            refusals.append(exc)
    assert len(refusals) == 3 and all(map(wrote_into_input, refusals))
    assert not wrote_into_input(OSError(30, "Read-only file system"))


INPUTS = {
    "gray uint8": synthetic_radiograph(),
    "gray uint16": synthetic_radiograph().astype(np.uint16) * 257,
    "rgb": np.dstack([synthetic_radiograph()] * 3),
    "float32": synthetic_radiograph().astype(np.float32) / 255,
    "inverted": 255 - synthetic_radiograph(),
}


@pytest.mark.parametrize("kind", list(INPUTS))
def test_built_in_steps_never_write_into_their_input(kind: str) -> None:
    image = INPUTS[kind].copy()
    steps = [StepConfig(name=n) for n in ("grayscale", "invert", "hand_crop", "clahe", "resize", "normalize")]
    for config in [PreprocessConfig.default(64), PreprocessConfig(steps=tuple(steps)),
                   *(PreprocessConfig(steps=(step,)) for step in steps)]:
        with contextlib.suppress(PreprocessError):  # hand_crop alone takes no colour image; a write is a PluginError
            build_pipeline(config).raw(image)
        assert np.array_equal(image, INPUTS[kind]) and image.flags.writeable
    gray = INPUTS["gray uint8"].copy()
    assert build_pipeline(PreprocessConfig(steps=(StepConfig(name="grayscale"),))).raw(gray) is gray  # as before


# --- 8: PIL images are read as their files are -----------------------------------------------------------------

def as_file_and_pil(tmp_path: Path, image: Image.Image, suffix: str = ".png", **save: Any) -> tuple[Any, Any]:
    path = tmp_path / f"im{suffix}"
    image.save(path, **save)
    return read_image(path), read_image(Image.open(path))


def gray16(bits: int) -> np.ndarray:
    return (synthetic_radiograph().astype(np.uint32) * ((1 << bits) - 1) // 255).astype(np.uint16)


PIL_IMAGES = {
    "L": lambda: Image.fromarray(synthetic_radiograph()),
    "1": lambda: Image.fromarray(synthetic_radiograph() > 100),
    "RGB": lambda: Image.fromarray(np.dstack([synthetic_radiograph()] * 3)),
    "RGBA": lambda: Image.fromarray(np.dstack([synthetic_radiograph()] * 3 + [np.full((300, 240), 255, np.uint8)])),
    "LA": lambda: Image.fromarray(synthetic_radiograph()).convert("LA"),
    "P": lambda: Image.fromarray(synthetic_radiograph()).convert("P"),
    "I;16, 12 bits": lambda: Image.fromarray(gray16(12)),
    "I;16, 16 bits": lambda: Image.fromarray(gray16(16)),
}


@pytest.mark.parametrize("mode", list(PIL_IMAGES))
def test_a_pil_image_reads_as_its_png_file_does(mode: str, tmp_path: Path) -> None:
    from_file, from_pil = as_file_and_pil(tmp_path, PIL_IMAGES[mode]())
    assert from_pil.image.dtype == from_file.image.dtype and np.array_equal(from_pil.image, from_file.image)
    assert from_pil.notes == from_file.notes  # a 12-bit image is scaled by its bit depth, with the same note
    in_memory = read_image(PIL_IMAGES[mode]())  # made in memory, never saved
    assert np.array_equal(in_memory.image, from_file.image)


def test_a_pil_image_of_premultiplied_mode_la_reads_as_its_la_image() -> None:
    la = Image.fromarray(np.dstack([synthetic_radiograph(), np.full((300, 240), 255, np.uint8)]), mode="LA")
    # was: "cannot be read: conversion from La to L not supported" for a mode PIL_MODES lists
    assert np.array_equal(read_image(la.convert("La")).image, read_image(la).image)


def test_a_pil_image_is_decoded_outside_the_warnings_lock() -> None:
    from boneage.formats import _warnings_lock

    image = Image.fromarray(synthetic_radiograph()).convert("P")
    held: list[tuple[str, bool]] = []
    load, convert = image.load, image.convert
    owned = _warnings_lock._is_owned  # type: ignore[attr-defined,unused-ignore]  # RLock.locked(): Python 3.14

    def spy_load() -> Any:
        held.append(("load", owned()))
        return load()

    def spy_convert(*args: Any, **kwargs: Any) -> Any:
        held.append(("convert", owned()))
        return convert(*args, **kwargs)

    image.load, image.convert = spy_load, spy_convert  # type: ignore[method-assign]
    read_image(image)
    assert {name for name, _ in held} == {"load", "convert"}
    assert not any(locked for _, locked in held)  # was: both under the process-wide lock


def test_a_pil_image_of_mode_i_reads_as_16_bits() -> None:
    values = gray16(12).astype(np.int32)
    assert np.array_equal(read_image(Image.fromarray(values, mode="I")).image, read_image(gray16(12)).image)
    with pytest.raises(UnsupportedImageError, match="mode I with values from -5"):
        read_image(Image.fromarray(values - 5, mode="I"))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_pil_image_honours_its_exif_orientation_as_its_file_does(orientation: int, tmp_path: Path) -> None:
    image = Image.fromarray(cv2.copyMakeBorder(synthetic_radiograph(), 0, 40, 0, 0, cv2.BORDER_CONSTANT, value=255))
    exif = Image.Exif()
    exif[0x0112] = orientation
    for suffix in (".jpg", ".png"):
        from_file, from_pil = as_file_and_pil(tmp_path, image, suffix, exif=exif.tobytes())
        assert np.array_equal(from_pil.image, from_file.image)
        assert from_pil.image.shape == ((340, 240) if orientation == 3 else (240, 340))
        assert from_pil.notes == from_file.notes and f"EXIF orientation {orientation} applied" in from_pil.notes[0]


def test_a_pil_image_is_answered_by_the_estimator(tiny_model: Path, tmp_path: Path) -> None:
    path = write_png(tmp_path / "hand.png", synthetic_radiograph())
    estimator = BoneAgeEstimator(tiny_model)
    with Image.open(path) as image:  # was: UnsupportedImageError "cannot read an image from a PngImageFile"
        assert estimator.predict(image, male=True).bone_age_months == estimator.predict(path, male=True).bone_age_months


def test_pil_images_that_cannot_be_read_are_typed_errors(tmp_path: Path) -> None:
    pages = [Image.fromarray(synthetic_radiograph()), Image.fromarray(synthetic_radiograph(seed=1))]
    pages[0].save(tmp_path / "two.tif", save_all=True, append_images=pages[1:])
    with Image.open(tmp_path / "two.tif") as tiff, pytest.raises(UnsupportedImageError, match="has 2 frames"):
        read_image(tiff)  # as a multi-page TIFF file is refused
    pages[0].save(tmp_path / "anim.gif", save_all=True, append_images=pages[1:])
    with Image.open(tmp_path / "anim.gif") as gif, pytest.raises(UnsupportedImageError, match="has 2 frames"):
        read_image(gif)
    with pytest.raises(UnsupportedImageError, match="mode 'LAB'"):
        read_image(Image.new("LAB", (64, 64)))
    with pytest.raises(ImageTooLargeError):
        read_image(Image.new("L", (9000, 8000)))  # 72 MP, over the 64 MP an image may have
    with pytest.raises(ImageTooSmallError, match="at least 32x32"):
        read_image(Image.new("L", (20, 20)))
    write_png(tmp_path / "hand.png", synthetic_radiograph())
    data = (tmp_path / "hand.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with Image.open(tmp_path / "cut.png") as cut, pytest.raises(ImageReadError, match="the PIL image cannot be read"):
        read_image(cut)
    closed = Image.open(tmp_path / "hand.png")
    closed.close()
    with pytest.raises(ImageReadError):
        read_image(closed)
