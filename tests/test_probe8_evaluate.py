"""What the eighth outside probe (issue 19) found in evaluate, one test each."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from boneage.errors import ConfigError
from tests.helpers import register, synthetic_radiograph, tiny_card, write_png, write_tiny_model


@pytest.fixture
def interval_model(tmp_path: Path, models_dir: Path) -> Path:
    """A tiny known release whose card has prediction intervals, so evaluate measures their coverage too."""
    from boneage.calibration import Band, IntervalCalibration

    interval = IntervalCalibration(level=0.9, bands=(Band(below_months=None, half_width_months=30.0, n_calibration=100),))
    path = write_tiny_model(tmp_path / "tiny-interval.onnx", card=tiny_card(interval=interval))
    register(path, models_dir)
    return path


def labelled(folder: Path, rows: dict[str, tuple[float, bool]], junk: bool = False) -> str:
    """``--data`` for these ids (id: (bone age in months, male)): real-looking PNGs, or files of junk."""
    images = folder / "images"
    images.mkdir()
    for name in rows:
        if junk:
            (images / f"{name}.png").write_bytes(b"junk\n")
        else:
            write_png(images / f"{name}.png", synthetic_radiograph())
    labels = folder / "labels.csv"
    labels.write_text("id,boneage,male\n" + "".join(f"{i},{age},{int(m)}\n" for i, (age, m) in rows.items()))
    return f"{labels}:{images}"


def sources(data: str) -> list[Any]:
    from boneage.cli.train import source
    from boneage.training.config import DataSource

    return [DataSource.model_validate(source(data))]


def never_run(*args: object, **kwargs: object) -> None:
    pytest.fail("the model was loaded before the output folder was checked")


def test_an_output_that_cannot_be_a_folder_is_refused_before_the_model_runs(
        tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # --output an existing file, afile/sub, /proc/x, or (with --force) a folder holding a directory named
    # report.json was an internal error (FileExistsError, NotADirectoryError, FileNotFoundError,
    # IsADirectoryError: exit 70), and only after every image had been predicted
    from boneage import evaluation
    from boneage.cli.main import main

    data = labelled(tmp_path, {"1": (100, True)})
    (tmp_path / "afile").write_text("x")
    (tmp_path / "held" / "report.json").mkdir(parents=True)
    outputs = [tmp_path / "afile", tmp_path / "afile" / "sub", tmp_path / "held"]
    if Path("/proc/self").is_dir():
        outputs.append(Path("/proc/evalout"))
    with monkeypatch.context() as m:
        m.setattr(evaluation, "BoneAgeEstimator", never_run)
        for output in outputs:
            with pytest.raises(ConfigError, match="cannot write the reports into"):
                evaluation.evaluate(str(tiny_model), sources(data), output, force=True)
    assert main(["evaluate", str(tiny_model), "--data", data, "--output", str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err
    assert "internal error" not in err and "cannot write the reports into" in err


def test_a_report_that_cannot_be_written_after_the_predictions_is_a_typed_error(
        tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the writes after the predictions were not wrapped: an OSError there was an internal error (exit 70)
    from boneage import evaluation

    data, out = labelled(tmp_path, {"1": (100, True)}), tmp_path / "out"
    predict = evaluation.predict_records

    def predict_then_block(*args: Any) -> Any:  # something takes the name while the model runs
        (out / "predictions.csv").mkdir(parents=True)
        return predict(*args)

    monkeypatch.setattr(evaluation, "predict_records", predict_then_block)
    with pytest.raises(ConfigError, match="cannot write the reports into"):
        evaluation.evaluate(str(tiny_model), sources(data), out)


def test_no_readable_image_is_a_typed_error_that_names_the_failures(
        tmp_path: Path, interval_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # all images junk: NumPy's "Mean of empty slice" reached the terminal, then TypeError: ufunc 'invert'
    # in calibration.coverage_of (an empty array of the kept records is float64): exit 70, no report
    from boneage.cli.main import main
    from boneage.evaluation import evaluate

    data = labelled(tmp_path, {"1": (100, True), "2": (120, False), "3": (50, True)}, junk=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ConfigError, match=r"none of the 3 images could be read: .*1\.png: ") as raised:
            evaluate(str(interval_model), sources(data), tmp_path / "out")
    assert "and 1 more" in str(raised.value) or "3.png" in str(raised.value)
    assert main(["evaluate", str(interval_model), "--data", data, "--output", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert "internal error" not in err and "none of the 3 images could be read" in err


def test_empty_groups_give_no_numpy_warnings_and_no_type_error() -> None:
    # coverage() of no images, or of a float array of sexes, was TypeError: ufunc 'invert' (exit 70),
    # after RuntimeWarnings "Mean of empty slice" on the terminal
    from boneage.calibration import Band, IntervalCalibration, coverage
    from boneage.metrics import report

    card = IntervalCalibration(level=0.9, bands=(Band(below_months=None, half_width_months=30.0, n_calibration=100),))
    none = np.array([])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        measured = coverage(card, none, none, none)
        assert measured["n"] == 0 and measured["coverage"] is None and measured["mean_width_months"] is None
        assert measured["by_sex"] == {"male": {"n": 0, "coverage": None}, "female": {"n": 0, "coverage": None}}
        assert report(none, none, none)["overall"]["mae"] is None


def test_limit_is_a_whole_number_of_at_least_one(
        tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # --limit -10 crashed as above (exit 70), --limit -1 silently left out the last image, --limit 0 meant all
    from boneage import evaluation
    from boneage.cli.main import main

    data = labelled(tmp_path, {"1": (100, True), "2": (120, False)})
    for limit in ("0", "-1", "-10", "1.5"):
        with pytest.raises(SystemExit) as exited:
            main(["evaluate", str(tiny_model), "--data", data, "--output", str(tmp_path / "out"), "--limit", limit])
        assert exited.value.code == 2
    assert "--limit" in capsys.readouterr().err
    with monkeypatch.context() as m:
        m.setattr(evaluation, "BoneAgeEstimator", never_run)
        for bad in (0, -1, -10):
            with pytest.raises(ConfigError, match="limit"):
                evaluation.evaluate(str(tiny_model), sources(data), tmp_path / "out", limit=bad)
    assert evaluation.evaluate(str(tiny_model), sources(data), tmp_path / "out", limit=1)["images"] == 1


def test_report_json_is_strict_json_with_null_for_an_empty_group(tmp_path: Path, interval_model: Path) -> None:
    # an empty age band or sex (or one image in a group: R² undefined) was written as a bare NaN token,
    # which JSON.parse and other strict parsers reject
    from boneage.evaluation import evaluate

    out = tmp_path / "out"
    evaluate(str(interval_model), sources(labelled(tmp_path, {"1": (100, True), "2": (130, True)})), out)

    def refuse(token: str) -> None:
        raise AssertionError(f"report.json holds {token}")

    result = json.loads((out / "report.json").read_text(), parse_constant=refuse)
    assert result["by_sex"]["female"] == {"n": 0, "mae": None, "rmse": None, "r2": None, "bias": None, "over_24": None}
    assert result["by_age"]["0-2y"]["mae"] is None and result["by_age"]["6-10y"]["r2"] is None  # one image
    assert result["interval_coverage"]["by_sex"]["female"] == {"n": 0, "coverage": None}
    summary = (out / "summary.md").read_text()
    assert "nan" not in summary.lower() and "| female | 0 | - | - | - | - | - |" in summary


def test_age_bands_are_one_definition_and_the_last_holds_every_label_allowed(tmp_path: Path) -> None:
    # the coverage table's last band was "14-20y" where the metrics table's was "14-19y", and labels of
    # 229-300 months (allowed by the labels check) fell into no band of either
    from boneage.calibration import coverage_of
    from boneage.metrics import report
    from boneage.training.data import MAX_LABEL_MONTHS

    ages = np.array([0.0, 23.9, 24.0, 100.0, 168.0, 228.0, 229.0, float(MAX_LABEL_MONTHS)])
    male = np.arange(ages.size) % 2 == 0
    metrics = report(ages, ages + 1, male)["by_age"]
    covered = coverage_of(np.ones(ages.size, bool), np.ones(ages.size), ages, male)["by_age"]
    assert list(metrics) == list(covered) and list(metrics)[-1] == "14-19y"
    assert [m["n"] for m in metrics.values()] == [c["n"] for c in covered.values()] == [2, 1, 1, 0, 4]


def test_a_failed_evaluation_leaves_no_empty_output_folder(tmp_path: Path) -> None:
    # the folder was made up front to check it, and stayed behind (empty) when the evaluation then failed
    from boneage.evaluation import prepare_output

    output = tmp_path / "new" / "reports"
    assert prepare_output(output, force=False) == []
    assert not (tmp_path / "new").exists()
