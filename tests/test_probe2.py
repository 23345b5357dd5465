"""What the second outside probe found (issue 19, "look for the rest of its kind"), one test each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from boneage import BoneAgeEstimator, hookimpl
from boneage.cli.main import main
from boneage.errors import ModelOutputError, PluginError, PreprocessError
from boneage.modelcard import ModelCard
from boneage.preprocess import PreprocessConfig, StepConfig, build_pipeline
from boneage.specs import ReferenceSpec, RuntimeSpec, StepSpec
from tests.helpers import synthetic_radiograph, tiny_card, write_png
from tests.test_plugins import FlipParams, register


def test_resume_never_cuts_a_file_that_is_not_its_results(tiny_model: Path, radiograph_png: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.csv"
    notes.write_text("name,notes\nalice,a\nbob,b")  # no final newline: looks like a line cut short
    before = notes.read_bytes()
    code = main(["predict", str(radiograph_png), "--sex", "m", "--model", str(tiny_model), "--output", str(notes), "--resume"])
    assert code == 2 and "not a results file" in capsys.readouterr().err and notes.read_bytes() == before


@pytest.mark.parametrize("content", ["[" * 100_000, "1" * 5000 + "\n", '{"no": "source"}\n'])
def test_resume_on_odd_jsonl_is_an_input_error(tiny_model: Path, radiograph_png: Path, tmp_path: Path, content: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    odd = tmp_path / "odd.jsonl"
    odd.write_text(content + "\n")
    code = main(["predict", str(radiograph_png), "--sex", "m", "--model", str(tiny_model), "--output", str(odd), "--resume"])
    assert code == 2 and "--resume" in capsys.readouterr().err


def test_output_that_is_a_folder_or_fifo_is_refused(tiny_model: Path, radiograph_png: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d.csv").mkdir()
    os.mkfifo(tmp_path / "f.csv")
    for target in ("d.csv", "f.csv"):
        code = main(["predict", str(radiograph_png), "--sex", "m", "--model", str(tiny_model),
                     "--output", str(tmp_path / target), "--force"])
        assert code == 2 and "not a regular file" in capsys.readouterr().err


def test_csv_list_from_a_device_or_fifo_is_refused(tiny_model: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "list.csv"
    os.mkfifo(fifo)
    for source in ("/dev/zero", str(fifo)):
        done: list[int] = []
        def run(source: str = source, done: list[int] = done) -> None:
            done.append(main(["predict", "--csv", source, "--model", str(tiny_model)]))

        reader = threading.Thread(target=run, daemon=True)
        reader.start()
        reader.join(10)
        assert not reader.is_alive() and done == [2]
        assert "not a regular file" in capsys.readouterr().err


def test_a_date_typed_as_an_age_is_never_echoed(tiny_model: Path, radiograph_png: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(radiograph_png), "--sex", "m", "--model", str(tiny_model), "--age", "2015-03-02"]) == 2
    assert "2015" not in capsys.readouterr().err
    listing, out = tmp_path / "list.csv", tmp_path / "out.jsonl"
    listing.write_text(f"path,sex,age\n{radiograph_png},m,2015-03-02\n")
    assert main(["predict", "--csv", str(listing), "--model", str(tiny_model), "--output", str(out)]) == 2
    assert "2015" not in out.read_text() and "2015" not in capsys.readouterr().err


def test_ages_as_numpy_numbers(tiny_model: Path, radiograph: np.ndarray) -> None:
    estimator = BoneAgeEstimator(tiny_model)
    for age in (np.float32(120), np.int64(120)):
        assert estimator.predict(radiograph, male=True, age_months=age).comparison is not None  # type: ignore[arg-type]


@pytest.mark.parametrize("bands", [[], [{"below_months": None, "half_width_months": float("nan"), "n_calibration": 9}],
                                   [{"below_months": None, "half_width_months": -50.0, "n_calibration": 9}]])
def test_a_card_with_a_broken_interval_is_refused(bands: list[object]) -> None:
    """Empty bands raised IndexError at every prediction; NaN or negative widths gave nonsense."""
    with pytest.raises(ValueError, match="interval"):
        ModelCard.model_validate({**tiny_card().model_dump(mode="json"), "interval": {"level": 0.9, "bands": bands}})


@pytest.mark.parametrize("size", [100.7, [100], None])
def test_a_card_with_a_non_integer_resize_is_refused(size: object) -> None:
    steps = [{"name": "resize", "params": {"size": size}}]
    with pytest.raises(ValueError, match="whole number"):
        ModelCard.model_validate({**tiny_card().model_dump(mode="json"), "preprocessing": {"steps": steps}})


def test_registry_versions_are_bounded(models_dir: Path) -> None:
    from boneage.models import RegistryEntry

    with pytest.raises(ValueError, match="not semantic"):
        RegistryEntry(name="x", version="1." + "9" * 5000 + ".0", file="x.onnx", sha256="0" * 64, size=1, backbone="b")


class BadStepPlugin:
    @hookimpl
    def boneage_register_preprocess_steps(self) -> list[StepSpec]:
        return [StepSpec(name="returns_none", build=lambda p: (lambda image, trace: None), params=FlipParams, doc="returns None")]


def test_a_step_returning_something_else_than_an_image_is_typed(radiograph: np.ndarray) -> None:
    register(BadStepPlugin())
    with pytest.raises(PreprocessError, match="returned a NoneType"):
        build_pipeline(PreprocessConfig(steps=(StepConfig(name="returns_none"),)))(radiograph)


class FailingRuntime:
    name = "failing"

    def predict(self, images: np.ndarray, male: np.ndarray) -> np.ndarray:
        raise RuntimeError("device lost")


class FailingPlugin:
    @hookimpl
    def boneage_register_runtimes(self) -> list[RuntimeSpec]:
        return [RuntimeSpec(name="failing", load=lambda model, threads: FailingRuntime(), doc="always fails")]

    @hookimpl
    def boneage_register_references(self) -> list[ReferenceSpec]:
        def load() -> object:
            raise OSError("table missing")

        return [ReferenceSpec(name="broken", load=load, doc="cannot load")]


def test_failing_runtime_and_reference_plugins_are_typed(tiny_model: Path, radiograph: np.ndarray) -> None:
    register(FailingPlugin())
    with pytest.raises(ModelOutputError, match="runtime 'failing' failed .*device lost"):
        BoneAgeEstimator(tiny_model, runtime="failing").predict(radiograph, male=True)
    with pytest.raises(PluginError, match="reference 'broken' could not be loaded"):
        BoneAgeEstimator(tiny_model, reference="broken")


def test_closed_stderr_does_not_lose_the_results(tiny_model: Path, tmp_path: Path) -> None:
    files = [str(write_png(tmp_path / f"r{i}.png", synthetic_radiograph(seed=i))) for i in range(2)]
    code = ("import sys; from boneage.cli.main import main; "
            f"sys.exit(main(['predict', *{files!r}, '--sex', 'm', '--model', {str(tiny_model)!r}, '--json']))")
    done = subprocess.run(f"{sys.executable} -c \"{code}\" 2>&-", shell=True, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "BONEAGE_MODELS_DIR": str(tiny_model.parent / "models")})
    assert done.returncode == 0 and len(json.loads(done.stdout)) == 2
