"""What the eleventh outside probe found in the prediction itself (its findings 6, 7 and 8), one test each:
the DICOM header's two ages, ``make_prediction``'s months and interval, and the SDS category."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from boneage.calibration import IntervalCalibration
from boneage.errors import InputError, ModelOutputError
from boneage.patient import HeaderPatient, resolve
from boneage.preprocess.pipeline import Notes
from boneage.references import compare, load_reference
from tests.helpers import register, tiny_card, write_tiny_model

TAGS = ("PatientSex", "PatientAge", "PatientBirthDate", "StudyDate")


def header(**tags: str) -> HeaderPatient:
    return HeaderPatient.from_tags(*(tags.get(k) for k in TAGS))


def calibrated(tmp_path: Path, models_dir: Path) -> Path:
    interval = IntervalCalibration(level=0.9, bands=({"below_months": 100.0, "half_width_months": 20.0, "n_calibration": 50},
                                                     {"below_months": None, "half_width_months": 12.0, "n_calibration": 50}))
    return register(write_tiny_model(tmp_path / "calibrated.onnx", card=tiny_card(interval=interval)), models_dir)


# --- 6: the header's dates and PatientAge ---------------------------------------------------------------


def test_header_dates_and_patient_age_that_disagree_are_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    # dates giving 15 years and PatientAge 005Y: the dates were used, without a word
    caplog.set_level(logging.DEBUG)
    tags = {"PatientSex": "F", "PatientAge": "005Y", "PatientBirthDate": "20100101", "StudyDate": "20250101"}
    taken = resolve(None, None, header(**tags))
    assert taken.age_months == pytest.approx(180.0, abs=0.1)
    (warning,) = taken.warnings
    assert "PatientBirthDate and StudyDate" in warning and "than its PatientAge" in warning
    assert "120.0 months more" in warning and "the dates are used" in warning
    for value in tags.values():
        assert value not in warning and value not in caplog.text
    # within PatientAge's unit and a month: 005Y is 60 to 72 months, as completed years are written
    for study in ("20150101", "20151215", "20160101"):
        assert resolve(None, None, header(**{**tags, "StudyDate": study})).warnings == (), study
    assert resolve(None, None, header(**{**tags, "StudyDate": "20160301"})).warnings  # 74 months: 14 past 60
    assert resolve(None, None, header(**{**tags, "PatientAge": "060M", "StudyDate": "20150315"})).warnings  # 2.4 mo
    assert not resolve(None, None, header(**{**tags, "PatientAge": "060M", "StudyDate": "20150201"})).warnings
    # an age given by the caller wins: the header's own disagreement is not about the age used
    given = resolve(False, 180.0, header(**tags))
    assert given.warnings == () and given.age_months == 180.0


def test_unusable_header_dates_that_patient_age_stands_in_for_are_noted(caplog: pytest.LogCaptureFixture) -> None:
    # dates 125 years apart were refused, and PatientAge used, with no word of either
    caplog.set_level(logging.DEBUG)
    for dates, why in ((("19000101", "20250101"), "more than 30 years apart"),
                       (("20250101", "20100101"), "the study date is before the date of birth"),
                       (("20101345", "20250101"), "its PatientBirthDate is not a date"),
                       (("20100101", None), "its StudyDate is missing")):
        tags = {"PatientSex": "F", "PatientAge": "005Y", "PatientBirthDate": dates[0], "StudyDate": dates[1]}
        taken = resolve(None, None, header(**{k: v for k, v in tags.items() if v is not None}))
        assert taken.age_months == 60.0 and taken.warnings == ()
        (note,) = [n for n in taken.notes if "chronological age" in n]
        assert note.startswith("chronological age taken from the DICOM header (PatientAge), as its dates give none")
        assert why in note
        for value in dates:
            assert value is None or (value not in note and value not in caplog.text)
    # the dates alone, or PatientAge alone: as before
    assert resolve(None, None, header(PatientSex="F", PatientAge="005Y")).notes[-1] == (
        "chronological age taken from the DICOM header (PatientAge)")
    assert header(PatientSex="F", PatientBirthDate="20100101").age_problem is None  # no age, nothing to say


@pytest.mark.filterwarnings("ignore:Invalid value for VR")
def test_predict_of_a_dicom_whose_ages_disagree_warns(tiny_model: Path, radiograph: np.ndarray,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("pydicom", reason="the dicom extra is not installed")
    from boneage import BoneAgeEstimator
    from tests.test_dicom import dataset, encoded

    caplog.set_level(logging.DEBUG)
    estimator = BoneAgeEstimator(tiny_model)
    gray = radiograph if radiograph.ndim == 2 else radiograph[..., 0]
    tags = {"PatientSex": "F", "PatientAge": "005Y", "PatientBirthDate": "20100101", "StudyDate": "20250101"}
    caplog.clear()
    disagree = estimator.predict(encoded(dataset(np.ascontiguousarray(gray), **tags)))  # type: ignore[arg-type]
    assert any("than its PatientAge: the dates are used" in w for w in disagree.warnings)
    older = {**tags, "PatientBirthDate": "19000101"}
    fallback = estimator.predict(encoded(dataset(np.ascontiguousarray(gray), **older)))  # type: ignore[arg-type]
    assert fallback.comparison is not None and fallback.comparison.chronological_age_months == 60.0
    assert any("as its dates give none" in n for n in fallback.notes)
    shown = caplog.text + str(disagree.model_dump()) + str(fallback.model_dump())
    for value in ("20100101", "20250101", "19000101", "2010-01-01"):
        assert value not in shown


# --- 7: make_prediction's months, and an interval that holds the estimate --------------------------------


def test_make_prediction_refuses_months_that_are_not_finite(tiny_model: Path) -> None:
    # NaN and infinity gave bone_age_months=nan (the CLI's JSON then failed), "x" a bare ValueError
    from boneage import BoneAgeEstimator

    estimator = BoneAgeEstimator(tiny_model)
    infinite: tuple[object, ...] = (float("nan"), float("inf"), -float("inf"), np.float32("nan"), 10**400)
    for months in infinite:
        with pytest.raises(ModelOutputError, match="NaN or infinity"):
            estimator.make_prediction(months, False, None, Notes(), 100.0)  # type: ignore[arg-type]
    for months in ("150", None, True, [150.0]):
        with pytest.raises(InputError, match="number of months"):
            estimator.make_prediction(months, False, None, Notes(), 100.0)  # type: ignore[arg-type]
    assert estimator.make_prediction(np.float32(150.0), False, None, Notes()).bone_age_months == 150.0  # type: ignore[arg-type]


def test_a_negative_estimate_is_given_as_0_with_a_warning_and_inside_its_interval(
        tmp_path: Path, models_dir: Path, radiograph: np.ndarray) -> None:
    # -5 months got the interval 0-23.16, which does not hold it, and no word but "outside the 0-240"
    from boneage import BoneAgeEstimator

    estimator = BoneAgeEstimator(calibrated(tmp_path, models_dir))
    direct = estimator.make_prediction(-5, False, None, Notes(), 100.0)
    estimator.run = lambda images, male: np.full(len(male), -5.0, np.float32)  # type: ignore[method-assign]
    predicted = estimator.predict(radiograph, male=False, age_months=100.0)  # predict answers as make_prediction
    for made in (direct, predicted):
        assert made.bone_age_months == 0.0 and made.bone_age_years == 0.0
        assert made.interval is not None and made.interval.low_months <= 0.0 <= made.interval.high_months
        assert any("answered -5.00 months" in w and "given as 0" in w for w in made.warnings)
        assert made.comparison is not None and made.comparison.bone_age_minus_age_months == -100.0
    tiny = estimator.make_prediction(-0.004, False, None, Notes())  # rounds to 0 as shown: nothing to say
    assert tiny.bone_age_months == 0.0 and not any("given as 0" in w for w in tiny.warnings)
    # the calibration itself never leaves out the estimate
    card = estimator.card.interval
    assert card is not None
    for value in (-30.0, -5.0, -0.01, 0.0, 3.0, 50.0, 250.0, 1e6):
        interval = card.interval(value)
        assert interval.low_months <= round(value, 2) <= interval.high_months, value
        assert interval.low_months >= min(0.0, round(value, 2))


# --- 8: the SDS category is that of the SDS shown ----------------------------------------------------------


# x.xx5 exactly rounds either way in binary: the cases stay a hair off it
@pytest.mark.parametrize(("z", "sds", "category"), [
    (1.9951, 2.0, "normal"), (2.0, 2.0, "normal"), (2.004, 2.0, "normal"), (2.0051, 2.01, "advanced"),
    (2.5, 2.5, "advanced"), (-1.9951, -2.0, "normal"), (-2.0, -2.0, "normal"), (-2.004, -2.0, "normal"),
    (-2.0051, -2.01, "delayed"), (0.001, 0.0, "normal"), (-0.001, 0.0, "normal"),
])
@pytest.mark.parametrize("male", [True, False])
@pytest.mark.parametrize("age", [30.0, 120.0, 150.5])
def test_the_category_is_that_of_the_rounded_sds(z: float, sds: float, category: str, male: bool, age: float) -> None:
    # 2.004 SD was shown as sds=2.0 with category "advanced", though within +-2 is normal
    table = load_reference()
    found = table.at(age, male)
    assert found is not None
    mean, sd = found
    result = compare(mean + z * sd, age, male, table)
    assert result.sds == sds and result.category == category
    assert str(result.sds) != "-0.0"


def test_make_prediction_shows_the_sds_its_category_is_of(tiny_model: Path) -> None:
    from boneage import BoneAgeEstimator

    estimator = BoneAgeEstimator(tiny_model)
    mean, sd = load_reference().at(120.0, False)  # type: ignore[misc]
    comparison = estimator.make_prediction(mean + 2.004 * sd, False, None, Notes(), 120.0).comparison
    assert comparison is not None and (comparison.sds, comparison.category) == (2.0, "normal")


def test_the_table_prints_the_sds_its_category_was_decided_on() -> None:
    from boneage.cli.predict import _comparison_cells

    cells = _comparison_cells({"chronological_age_months": 120.0, "bone_age_minus_age_months": 30.0,
                               "sds": 2.01, "category": "advanced"})
    assert cells[2] == "+2.01 (advanced)"  # one decimal printed "+2.0 (advanced)", where +2.0 counts as normal
