"""What the eighth outside probe (issue 19) found in predict, explain, ages and the API, one test each."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from boneage.cli.main import main
from boneage.errors import AgeError, ConfigError, InputError


def test_parquet_is_written_under_a_name_no_file_had(tiny_model: Path, radiograph_png: Path, tmp_path: Path) -> None:
    # the Parquet file was written to NAME.parquet.writing and renamed: a user's file of that name was
    # lost, and if it was a link, its target was overwritten with Parquet data
    pytest.importorskip("pyarrow", reason="needs the parquet extra")
    mine, important = tmp_path / "res.parquet.writing", tmp_path / "important.txt"
    important.write_text("important data")
    mine.symlink_to(important)
    assert main(["predict", str(radiograph_png), "--sex", "f", "--model", str(tiny_model),
                 "--output", str(tmp_path / "res.parquet")]) == 0
    assert mine.is_symlink() and important.read_text() == "important data"
    assert not (tmp_path / "res.parquet").is_symlink()
    assert [p.name for p in tmp_path.glob(".res.parquet*")] == []  # no temporary file left


@pytest.mark.parametrize("flag", ["--output", "--plot"])
def test_an_output_that_is_a_symbolic_link_is_refused(tiny_model: Path, radiograph_png: Path, tmp_path: Path,
                                                       flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    # a dangling link "did not exist", so the results (or the chart) were written through it to where it led
    pytest.importorskip("matplotlib", reason="--plot needs the plot extra") if flag == "--plot" else None
    target, link = tmp_path / "elsewhere" / "x", tmp_path / ("out.csv" if flag == "--output" else "chart.png")
    link.symlink_to(target)
    args = ["predict", str(radiograph_png), "--sex", "f", "--age", "10y", "--model", str(tiny_model), flag, str(link)]
    assert main(args) == 2
    assert "is a symbolic link" in capsys.readouterr().err
    assert not target.exists() and not target.parent.exists()


def test_explain_output_that_is_a_dangling_link_is_refused(tmp_path: Path) -> None:
    from boneage.cli.figures import new_png

    (tmp_path / "heat.png").symlink_to(tmp_path / "nowhere.png")
    for force in (False, True):
        with pytest.raises(InputError, match="symbolic link"):
            new_png(str(tmp_path / "heat.png"), force, "--output", tmp_path / "hand.png")


def test_resume_of_a_csv_with_a_short_row_is_a_typed_error(tiny_model: Path, radiograph_png: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    # row[ERROR_TYPE] of a one-field row: IndexError, an internal error (exit 70)
    results = tmp_path / "r.csv"
    assert main(["predict", str(radiograph_png), "--sex", "f", "--model", str(tiny_model), "--output", str(results)]) == 0
    header = results.read_text().splitlines()[0]
    results.write_text(f"{header}\n{radiograph_png}\n")
    assert main(["predict", str(radiograph_png), "--sex", "f", "--model", str(tiny_model), "--output", str(results),
                 "--resume"]) == 2
    assert "--resume: cannot read the results" in capsys.readouterr().err


def test_resume_answers_an_image_listed_twice_twice(tiny_model: Path, radiograph_png: Path, tmp_path: Path) -> None:
    # matched by path alone: the second row (another sex and age) counted as done, never answered
    listing = tmp_path / "list.csv"
    listing.write_text(f"path,sex,age\n{radiograph_png.name},f,10y\n{radiograph_png.name},m,12y\n")
    results = tmp_path / "r.jsonl"
    args = ["predict", "--csv", str(listing), "--model", str(tiny_model), "--output", str(results)]
    assert main(args) == 0
    first = results.read_text().splitlines()[0]
    results.write_text(first + "\n")  # as if stopped after the first row
    assert main([*args, "--resume"]) == 0
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["male"], r["comparison"]["chronological_age_months"]) for r in rows] == [(False, 120.0), (True, 144.0)]


@pytest.mark.parametrize("header", ["path,sex,Sex,age", "path,sex,age, AGE "])
def test_two_columns_of_one_name_are_refused_in_a_list(tiny_model: Path, tmp_path: Path, header: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # matched case-insensitively, the last of sex/Sex won: a girl was answered as a boy
    listing = tmp_path / "list.csv"
    listing.write_text(f"{header}\nx.png,f,m,10y\n")
    assert main(["predict", "--csv", str(listing), "--model", str(tiny_model)]) == 2
    err = capsys.readouterr().err
    assert "two columns are named" in err and "10y" not in err


def test_two_columns_of_one_name_are_refused_in_labels(tmp_path: Path) -> None:
    from boneage.training.config import DataSource
    from boneage.training.data import read_source

    (tmp_path / "images").mkdir()
    labels = tmp_path / "labels.csv"
    labels.write_text("id,boneage,male,Male\n1377,180.0,0,1\n")
    with pytest.raises(ConfigError, match="two columns are named 'male'"):
        read_source(DataSource(labels=labels, images=tmp_path / "images"))


def test_a_row_with_an_age_and_dates_is_refused_as_on_the_command_line() -> None:
    # the age won and dates 7 months from it were dropped without a word
    from boneage.cli.predict import row_age

    with pytest.raises(AgeError, match="not both"):
        row_age({"age": "10y", "dob": "2015-03-02", "study_date": "2025-10-03"})
    assert row_age({"age": "", "dob": "2015-03-02", "study_date": "2025-03-02"}) == pytest.approx(120, abs=0.1)


def test_ages_that_only_float_reads_are_refused_and_minus_zero_is_zero() -> None:
    from boneage.age import age_from_dates, parse_age

    for text in ("1_2", "1e2"):  # float() read "1_2" as 12
        with pytest.raises(AgeError):
            parse_age(text)
    assert str(parse_age("-0")) == "0.0"  # was shown as "-0.0 mo"
    with pytest.raises(AgeError, match="in the future"):
        age_from_dates("2090-01-01", "2100-06-01")


def test_an_impossible_sds_is_warned_about(tiny_model: Path, radiograph: np.ndarray) -> None:
    # an age of 12 (months, meant as years) against a bone age of 15 years: SDS +97 and no word
    from boneage import BoneAgeEstimator

    estimator = BoneAgeEstimator(str(tiny_model))
    months = estimator.predict(radiograph, male=False).bone_age_months
    far = estimator.predict(radiograph, male=False, age_months=months - 130 if months >= 130 else months + 130)
    near = estimator.predict(radiograph, male=False, age_months=months)
    assert any("check the age" in w for w in far.warnings)
    assert not any("check the age" in w for w in near.warnings)


def test_explain_renders_very_wide_and_tall_images(tiny_model: Path, radiograph: np.ndarray) -> None:
    # a 100000x32 image shrank to a height of 0 in render (cv2.error: exit 70; the service answered 500)
    from boneage import BoneAgeEstimator

    estimator = BoneAgeEstimator(str(tiny_model))
    for size in ((100_000, 32), (32, 100_000)):
        picture = estimator.explain(cv2.resize(radiograph, size), male=True).render()
        assert picture.ndim == 3 and min(picture.shape[:2]) >= 1
    explanation = estimator.explain(radiograph, male=True)
    for bad in (0, -5, "512", 10**6):
        with pytest.raises(InputError, match="max_side"):
            explanation.render(max_side=bad)  # type: ignore[arg-type]


def test_predict_many_checks_its_workers(tiny_model: Path, radiograph: np.ndarray) -> None:
    from boneage import BoneAgeEstimator

    estimator = BoneAgeEstimator(str(tiny_model))
    for bad in ("4", 2.0, -1, True, 10**6):  # "4" was a TypeError from comparing str and int
        with pytest.raises(InputError, match="workers"):
            estimator.predict_many([radiograph], [True], workers=bad)  # type: ignore[arg-type]
    assert len(estimator.predict_many([radiograph], [True], workers=0)) == 1


def test_a_chart_is_written_in_the_format_its_name_says(tiny_model: Path, radiograph: np.ndarray, tmp_path: Path) -> None:
    # plot(..., "chart.jpg") wrote PNG bytes under a .jpg name
    pytest.importorskip("matplotlib", reason="needs the plot extra")
    from boneage import BoneAgeEstimator

    estimator = BoneAgeEstimator(str(tiny_model))
    prediction = estimator.predict(radiograph, male=True, age_months=120)
    assert estimator.plot(prediction, tmp_path / "c.jpg").read_bytes()[:3] == b"\xff\xd8\xff"
    assert estimator.plot(prediction, tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(InputError, match="format its name ends with"):
        estimator.plot(prediction, tmp_path / "c.xyz")


def test_plot_of_a_dicom_may_take_its_age_from_the_header(tmp_path: Path) -> None:
    # a DICOM whose header gives the age was refused: "--plot needs the child's age"
    import argparse

    from boneage.cli.figures import plot_target

    pytest.importorskip("matplotlib", reason="needs the plot extra")
    args = argparse.Namespace(plot=str(tmp_path / "c.png"), force=False)
    job = type("Job", (), {"path": "scan.dcm", "age": None})()
    assert plot_target(args, [job], header_may_say=True) == tmp_path / "c.png"
    with pytest.raises(InputError, match="needs the child's age"):
        plot_target(args, [job], header_may_say=False)


def test_labels_rows_read_as_csv_quotes(tmp_path: Path) -> None:
    # the rows keep a value's commas and quotes as csv reads them
    from boneage.columns import csv_rows

    path = tmp_path / "l.csv"
    path.write_text('Id , BoneAge\n"a,b",1\n')
    assert [row.cells for row in csv_rows(path.read_bytes())] == [{"id": "a,b", "boneage": "1"}]
