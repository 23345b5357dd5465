"""Averaging over sampling grids (``views``): the estimate is the mean of the model's answers on the
image and its 1%-cropped copies, said in the result; bad values are refused (issue 18)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from boneage import BoneAgeEstimator
from boneage.cli.main import main
from boneage.defaults import MAX_VIEWS
from boneage.errors import ConfigError
from boneage.preprocess.views import grid_views


def test_the_first_view_is_the_image_and_the_others_are_crops_of_a_hundredth() -> None:
    image = np.arange(512 * 400).reshape(512, 400)
    views = grid_views(image, MAX_VIEWS)
    assert len(views) == MAX_VIEWS and views[0] is image
    assert [v.shape for v in views[1:5]] == [(507, 396)] * 4 and [v.shape for v in views[5:]] == [(502, 392)] * 3
    assert len({(int(v[0, 0]), int(v[-1, -1])) for v in views}) == MAX_VIEWS  # each on its own grid
    tiny = np.zeros((5, 5), np.uint8)
    assert all(v is tiny for v in grid_views(tiny, 3))  # nothing to crop


def test_the_estimate_is_the_mean_over_the_views_and_says_so(tiny_model: Path, radiograph: np.ndarray) -> None:
    one = BoneAgeEstimator(tiny_model, check_input=False)
    four = BoneAgeEstimator(tiny_model, check_input=False, views=4)
    each = [one.predict(np.ascontiguousarray(v), male=True).bone_age_months for v in grid_views(radiograph, 4)]
    assert len(set(each)) > 1  # the views differ, so the test can tell a mean from one answer
    result = four.predict(radiograph, male=True)
    assert result.bone_age_months == pytest.approx(float(np.mean(each)), abs=0.006)
    assert "averaged over 4 sampling grids" in result.notes
    batch = four.predict_batch([radiograph, radiograph[:, ::-1]], [True, False])  # views stay with their image
    assert batch[0].bone_age_months == pytest.approx(result.bone_age_months, abs=0.006)
    assert batch[1].bone_age_months == pytest.approx(four.predict(radiograph[:, ::-1], male=False).bone_age_months, abs=0.006)


def test_a_numpy_integer_is_a_whole_number_too(tiny_model: Path) -> None:
    assert BoneAgeEstimator(tiny_model, views=np.int64(2)).views == 2


@pytest.mark.parametrize("views", [0, MAX_VIEWS + 1, True, 2.0, "2", np.int64(9)])
def test_views_out_of_range_or_of_another_type_are_a_config_error(tiny_model: Path, views: object) -> None:
    with pytest.raises(ConfigError, match="views must be a whole number from 1 to 8"):
        BoneAgeEstimator(tiny_model, views=views)  # type: ignore[arg-type]


def test_the_command_line_takes_views_and_bounds_them(tiny_model: Path, radiograph_png: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(radiograph_png), "--sex", "m", "--model", str(tiny_model), "--views", "9"])
    assert exit_info.value.code == 2 and "must be at most 8" in capsys.readouterr().err
    assert main(["predict", str(radiograph_png), "--sex", "m", "--model", str(tiny_model), "--views", "2", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert "averaged over 2 sampling grids" in result["notes"]


def test_explain_gives_the_estimate_predict_gives(tiny_model: Path, radiograph: np.ndarray) -> None:
    four = BoneAgeEstimator(tiny_model, check_input=False, views=4)
    explained = four.explain(radiograph, male=True).prediction
    assert explained.bone_age_months == four.predict(radiograph, male=True).bone_age_months
    assert "averaged over 4 sampling grids" in explained.notes


def test_a_batch_of_many_views_is_run_in_calls_of_at_most_max_model_inputs(tiny_model: Path, radiograph: np.ndarray,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    # ninth probe: 4096 inputs a call (batch 1024 x 8 views) peaked at 11.7 GB; now MAX_MODEL_INPUTS (256)
    import boneage.estimator
    from boneage.defaults import MAX_MODEL_INPUTS

    assert MAX_MODEL_INPUTS <= 256
    monkeypatch.setattr(boneage.estimator, "MAX_MODEL_INPUTS", 5)
    estimator = BoneAgeEstimator(tiny_model, check_input=False, views=3)
    sizes: list[int] = []
    run = estimator.run
    monkeypatch.setattr(estimator, "run", lambda images, male: sizes.append(len(images)) or run(images, male))
    results = estimator.predict_batch([radiograph] * 4, [True] * 4, batch_size=4)
    assert sizes == [5, 5, 2] and len({r.bone_age_months for r in results}) == 1
