"""Bone age against chronological age (reference, SDS, category), age parsing, and intervals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from boneage import BoneAgeEstimator
from boneage.age import age_from_dates, check_age, parse_age
from boneage.calibration import IntervalCalibration, calibrate, conformal_quantile
from boneage.cli.main import main
from boneage.errors import AgeError, PluginNotFoundError
from boneage.references import compare, load_reference
from tests.helpers import register, tiny_card, write_tiny_model


def test_reference_rows_and_linear_interpolation() -> None:
    table = load_reference()
    assert table.at(120, male=True) == (125.68, 9.79) and table.at(120, male=False) == (125.66, 11.73)
    mean, sd = table.at(126, male=True)  # halfway between the 120 and 132 rows
    assert mean == pytest.approx((125.68 + 137.32) / 2) and sd == pytest.approx((9.79 + 10.09) / 2)
    assert table.span(True) == (3, 204) and table.span(False) == (3, 192)
    assert table.at(204, male=True) is not None and table.at(204, male=False) is None  # no extrapolation
    assert table.at(2.9, male=True) is None
    assert "Greulich" in table.source and "Gaskin" in table.source


@pytest.mark.parametrize(("bone_age", "category"), [(125.68 - 2.5 * 9.79, "delayed"), (125.68, "normal"),
                                                    (125.68 + 1.9 * 9.79, "normal"), (125.68 + 2.5 * 9.79, "advanced")])
def test_sds_and_category(bone_age: float, category: str) -> None:
    result = compare(bone_age, 120, True, load_reference())
    assert result.category == category
    assert result.sds == pytest.approx((bone_age - 125.68) / 9.79, abs=0.01)
    assert result.bone_age_minus_age_months == pytest.approx(bone_age - 120, abs=0.01)


def test_no_reference_outside_the_table_is_said_not_invented() -> None:
    result = compare(180, 200, False, load_reference())
    assert result.sds is None and result.category is None and result.expected_bone_age_months is None
    assert "no reference at this age" in (result.note or "") and result.bone_age_minus_age_months == -20


@pytest.mark.parametrize(("text", "months"), [("123", 123), ("10y", 120), ("10y3m", 123), ("10.5y", 126),
                                              ("3m", 3), (" 10 years 3 months ", 123), ("0", 0), ("10Y3M", 123)])
def test_age_parsing(text: str, months: float) -> None:
    assert parse_age(text) == months


@pytest.mark.parametrize("text", ["", "-3", "abc", "10y3x", "3m10y", "400", "nan", "inf", "y", "10 y 3", "10y13m", "10y12m", "1 year 12.5 months"])
def test_bad_ages_are_typed_errors(text: str) -> None:
    with pytest.raises(AgeError):
        parse_age(text)


@pytest.mark.parametrize("value", [-1, float("nan"), float("inf"), 361, "12", True, None])
def test_check_age(value: object) -> None:
    with pytest.raises(AgeError):
        check_age(value)


def test_age_from_dates_and_its_errors() -> None:
    assert age_from_dates("2014-03-01", "2024-03-01") == pytest.approx(120, abs=0.1)
    with pytest.raises(AgeError, match="before the date of birth") as exc:
        age_from_dates("2024-03-01", "2014-03-01")
    assert "2014" not in str(exc.value) and "2024" not in str(exc.value)  # dates identify patients
    with pytest.raises(AgeError, match="YYYY-MM-DD") as exc:
        age_from_dates("01/03/2014", "2024-03-01")
    assert "2014" not in str(exc.value)


def test_unknown_reference_is_a_plugin_error(tiny_model: Path) -> None:
    with pytest.raises(PluginNotFoundError, match="greulich-pyle-brush"):
        BoneAgeEstimator(tiny_model, reference="tanner-whitehouse")


def test_facade_compares_with_the_age(tiny_model: Path, radiograph: np.ndarray) -> None:
    estimator = BoneAgeEstimator(tiny_model)
    plain = estimator.predict(radiograph, male=True)
    assert plain.comparison is None and plain.interval is None  # a card without calibration
    with_age = estimator.predict(radiograph, male=True, age_months=100)
    assert with_age.bone_age_months == plain.bone_age_months
    assert with_age.comparison == compare(plain.bone_age_months, 100, True, estimator.reference)
    results = estimator.predict_many([radiograph] * 3, [True] * 3, ages=[100, -5, None])
    assert isinstance(results[1], AgeError) and results[2].comparison is None and results[0].comparison


def calibrated_model(tmp_path: Path, models_dir: Path) -> Path:
    interval = IntervalCalibration(level=0.9, bands=({"below_months": 100.0, "half_width_months": 20.0, "n_calibration": 50},
                                                     {"below_months": None, "half_width_months": 12.0, "n_calibration": 50}))
    path = write_tiny_model(tmp_path / "calibrated.onnx", card=tiny_card(interval=interval))
    return register(path, models_dir)


def test_prediction_carries_the_cards_interval(tmp_path: Path, models_dir: Path, radiograph: np.ndarray) -> None:
    estimator = BoneAgeEstimator(calibrated_model(tmp_path, models_dir))
    p = estimator.predict(radiograph, male=True)
    width = 20.0 if p.bone_age_months < 100 else 12.0
    assert p.interval is not None and p.interval.level == 0.9
    assert p.interval.low_months == pytest.approx(p.bone_age_months - width, abs=0.01)
    assert p.interval.high_months == pytest.approx(p.bone_age_months + width, abs=0.01)


def test_cli_age_interval_json_table_and_csv(tmp_path: Path, models_dir: Path, radiograph_png: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    model = str(calibrated_model(tmp_path, models_dir))
    assert main(["predict", str(radiograph_png), "--sex", "F", "--age", "12y", "--model", model, "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["comparison"]["chronological_age_months"] == 144 and result["comparison"]["category"]
    assert result["interval"]["level"] == 0.9
    assert main(["predict", str(radiograph_png), "--sex", "f", "--dob", "2014-01-01", "--study-date", "2026-01-01",
                 "--model", model]) == 0
    out = capsys.readouterr().out
    assert "interval" in out and "BA - CA" in out and "(90%)" in out and "2014" not in out
    listing = tmp_path / "list.csv"
    listing.write_text(f"path,sex,age,dob,study_date\n{radiograph_png},m,10y,,\n{radiograph_png},m,,2010-01-01,2020-01-01\n"
                       f"{radiograph_png},m,ten,,\n{radiograph_png},m,,,\n")
    out_csv = tmp_path / "out.csv"
    assert main(["predict", "--csv", str(listing), "--model", model, "--output", str(out_csv)]) == 2
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["chronological_age_months"] for r in rows] == ["120.0", "119.98", "", ""]
    assert rows[2]["error_type"] == "AgeError" and rows[3]["error"] == "" and rows[0]["interval_level"] == "0.9"


@pytest.mark.parametrize("args", [["--age", "12y", "--dob", "2014-01-01", "--study-date", "2026-01-01"],
                                  ["--dob", "2014-01-01"], ["--age", "-1"]])
def test_cli_age_errors(radiograph_png: Path, tiny_model: Path, args: list[str],
                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(radiograph_png), "--sex", "m", "--model", str(tiny_model), *args]) == 2
    assert "age" in capsys.readouterr().err


def test_conformal_quantile_is_the_finite_sample_one() -> None:
    errors = np.arange(1.0, 20.0)  # 19 errors: ceil(20 * 0.9) = 18th smallest
    assert conformal_quantile(errors, 0.9) == 18.0
    assert conformal_quantile(np.arange(1.0, 5.0), 0.9) == float("inf")


def test_intervals_cover_as_promised_on_held_out_data() -> None:  # cross-validated: every image held out once
    """Errors that grow with age, as this model's do: by-age bands keep coverage near 90% in each."""
    rng = np.random.default_rng(1)
    truth = rng.uniform(10, 220, 4000)
    predicted = truth + rng.normal(0, 1, 4000) * np.where(truth < 100, 25, 8)
    result = calibrate(predicted, truth, [f"id{i}" for i in range(4000)], rng.random(4000) < 0.5)
    assert result is not None and result.level == 0.9
    held_out = result.coverage["cross_validated"]
    assert held_out["n"] == 4000 and result.coverage["folds"] == 5
    assert abs(held_out["coverage"] - 0.9) < 0.03
    assert result.half_width(50) > 2 * result.half_width(200)  # the bands follow the data
    assert all(abs(m["coverage"] - 0.9) < 0.08 for m in held_out["by_sex"].values())


def test_too_few_calibration_images_give_no_interval() -> None:
    assert calibrate(np.ones(6), np.ones(6), [str(i) for i in range(6)]) is None


def test_sparse_bands_join_their_neighbours() -> None:
    rng = np.random.default_rng(2)
    truth = rng.uniform(150, 220, 300)  # nobody young: the young bands would be empty
    result = calibrate(truth + rng.normal(0, 5, 300), truth, [str(i) for i in range(300)])
    assert result is not None and all(b.n_calibration >= 40 for b in result.bands)
    assert sum(b.n_calibration for b in result.bands) == result.coverage["n"] == 300
