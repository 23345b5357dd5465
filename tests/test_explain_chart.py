"""Where the model looked (occlusion sensitivity) and the growth chart, in the library and the CLI."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from boneage import BoneAgeEstimator
from boneage.chart import growth_chart
from boneage.cli.main import main
from boneage.errors import InputError, MissingDependencyError
from boneage.explain import background_level, occlusion_map, positions, to_original
from boneage.preprocess import PreprocessConfig
from boneage.preprocess.config import StepConfig
from boneage.references import load_reference
from tests.helpers import tiny_card, write_tiny_model
from tests.test_clinical import calibrated_model


def png(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, f"{path} is not a readable PNG"
    return image


def test_positions_cover_every_pixel() -> None:
    assert positions(100, 16, 8) == [0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 84]
    assert positions(64, 64, 5) == [0]


def test_occlusion_scores_only_the_patches_that_hide_what_the_model_reads() -> None:
    image = np.zeros((40, 40, 1), np.float32)
    image[4:8, 30:34] = 1.0  # the one thing this "model" sees

    def run(batch: np.ndarray) -> np.ndarray:
        return 100.0 * batch.mean(axis=(1, 2, 3))

    baseline, heat = occlusion_map(run, image, patch=8, stride=4, fill=0.0)
    assert baseline == pytest.approx(100.0 * 16 / 1600)
    assert heat.shape == (40, 40) and 0.5 * baseline < heat[6, 32] <= heat.max() <= baseline + 1e-6
    assert heat[30:, :].max() == 0 and heat[:, :20].max() == 0  # patches that hide nothing score nothing
    with pytest.raises(InputError):
        occlusion_map(run, image, patch=50, stride=4, fill=0.0)


def test_tiny_model_heat_is_higher_where_the_image_is_bright(tiny_model: Path, radiograph: np.ndarray) -> None:
    estimator = BoneAgeEstimator(tiny_model)
    ex = estimator.explain(radiograph, male=True, age_months=100)
    assert ex.prediction.bone_age_months == estimator.predict(radiograph, male=True).bone_age_months
    assert ex.prediction.comparison is not None and ex.heatmap.shape == (64, 64)
    bright, dark = ex.model_input > 0.5, ex.model_input < 0.2  # the model answers 50 + 100 * mean(image)
    assert bright.any() and dark.any()
    assert ex.heatmap[bright].mean() > 2 * ex.heatmap[dark].mean()
    # for this model a patch moves the answer by its brightness above the fill: heat follows local brightness
    local = cv2.blur(ex.model_input - background_level(ex.model_input), (ex.patch, ex.patch))
    assert np.corrcoef(ex.heatmap.ravel(), local.ravel())[0, 1] > 0.9
    assert ex.on_original and ex.image.shape == ex.heat.shape == radiograph.shape  # stretch: mapped back by scaling
    picture = ex.render()
    assert picture.ndim == 3 and picture.shape[1] == radiograph.shape[1] and picture.shape[0] > radiograph.shape[0]


def test_the_heatmap_maps_back_through_stretch_and_pad_not_through_a_crop() -> None:
    heat = np.zeros((10, 10), np.float32)
    heat[:, :5] = 1.0  # the left half of the model input
    stretch = to_original(heat, PreprocessConfig.default(10), (40, 20))
    assert stretch is not None and stretch.shape == (40, 20) and stretch[:, :8].min() == 1 and stretch[:, 12:].max() == 0
    pad = PreprocessConfig(steps=(StepConfig(name="resize", params={"size": 10, "mode": "pad"}),))
    padded = np.zeros((10, 10), np.float32)
    padded[:, 2:4] = 1.0  # a 40x20 image fills columns 2-6 of the padded square: this is its left 40%
    mapped = to_original(padded, pad, (40, 20))
    assert mapped is not None and mapped[:, :6].min() == 1 and mapped[:, 10:].max() == 0
    padded[:] = 0
    padded[:, :2] = padded[:, 7:] = 1.0  # heat on the padding only: none of it lands on the radiograph
    assert np.all(to_original(padded, pad, (40, 20)) == 0)
    crop = PreprocessConfig(steps=(StepConfig(name="hand_crop"), *PreprocessConfig.default(10).steps))
    assert to_original(heat, crop, (40, 20)) is None


def test_a_cropping_pipeline_is_drawn_on_the_model_input(tmp_path: Path, radiograph: np.ndarray) -> None:
    steps = (StepConfig(name="grayscale"), StepConfig(name="hand_crop"), *PreprocessConfig.default(64).steps[1:])
    model = write_tiny_model(tmp_path / "crop.onnx", card=tiny_card(preprocessing=PreprocessConfig(steps=steps)))
    ex = BoneAgeEstimator(model).explain(radiograph, male=False)
    assert not ex.on_original and ex.image.shape == (64, 64)
    assert ex.save(tmp_path / "heat.png").stat().st_size > 0 and png(tmp_path / "heat.png").shape[1] == 512


def test_explain_imports_neither_tensorflow_nor_matplotlib(tiny_model: Path, radiograph_png: Path, tmp_path: Path) -> None:
    code = (
        "import sys\nfrom boneage.cli.main import main\n"
        f"assert main(['explain', {str(radiograph_png)!r}, '--sex', 'm', '--model', {str(tiny_model)!r}, "
        f"'--output', {str(tmp_path / 'h.png')!r}]) == 0\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'matplotlib') if m in sys.modules]\nassert not heavy, heavy\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_explain_cli_writes_a_png_and_does_not_overwrite_unasked(tiny_model: Path, radiograph_png: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "heat.png"
    args = ["explain", str(radiograph_png), "--sex", "female", "--age", "10y", "--model", str(tiny_model), "--output", str(out)]
    assert main(args) == 0
    assert png(out).shape[1] == 240 and "BA - CA" in capsys.readouterr().out
    out.write_bytes(b"the user's own file")
    assert main(args) == 2
    assert "exists: add --force" in capsys.readouterr().err and out.read_bytes() == b"the user's own file"
    assert main([*args, "--force", "--json"]) == 0 and png(out).size
    assert '"chronological_age_months": 120.0' in capsys.readouterr().out


@pytest.mark.parametrize(("image", "output", "message"), [
    ("missing.png", "heat.png", "missing.png"),
    (None, "heat.jpg", "must end in .png"),
    (None, "no-such-folder/heat.png", "does not exist"),
])
def test_explain_cli_errors(tiny_model: Path, radiograph_png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            image: str | None, output: str, message: str) -> None:
    source = str(tmp_path / image) if image else str(radiograph_png)
    assert main(["explain", source, "--sex", "m", "--model", str(tiny_model), "--output", str(tmp_path / output)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "heat.png").exists()


needs_matplotlib = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                      reason="matplotlib is not installed (extra: plot)")


@needs_matplotlib
def test_plot_cli_draws_the_chart_with_the_interval(tmp_path: Path, models_dir: Path, radiograph_png: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    model, chart = str(calibrated_model(tmp_path, models_dir)), tmp_path / "chart.png"
    args = ["predict", str(radiograph_png), "--sex", "F", "--age", "12y", "--model", model, "--plot", str(chart)]
    assert main(args) == 0
    assert png(chart).shape[:2] == (560, 640) and "growth chart written" in capsys.readouterr().err
    before = chart.read_bytes()
    assert main(args) == 2 and "exists: add --force" in capsys.readouterr().err and chart.read_bytes() == before
    assert main([*args, "--force"]) == 0


@pytest.mark.parametrize(("extra", "message"), [([], "needs the child's age"), (["SECOND", "--age", "12y"], "one FILE")])
def test_plot_cli_needs_an_age_and_one_input(tiny_model: Path, radiograph_png: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str], extra: list[str], message: str) -> None:
    extra = [str(radiograph_png) if e == "SECOND" else e for e in extra]
    args = ["predict", str(radiograph_png), *extra, "--sex", "m", "--model", str(tiny_model), "--plot", str(tmp_path / "c.png")]
    assert main(args) == 2
    assert message in capsys.readouterr().err and not (tmp_path / "c.png").exists()


def test_without_matplotlib_the_error_names_the_extra(tiny_model: Path, radiograph_png: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: the import fails
    args = ["predict", str(radiograph_png), "--sex", "m", "--age", "9y", "--model", str(tiny_model), "--plot", str(tmp_path / "c.png")]
    assert main(args) == 5
    assert 'pip install "boneage[plot]"' in capsys.readouterr().err
    estimator = BoneAgeEstimator(tiny_model)
    with pytest.raises(MissingDependencyError, match="boneage\\[plot\\]"):
        estimator.plot(estimator.predict(radiograph_png, male=True, age_months=108), tmp_path / "c.png")


@needs_matplotlib
def test_growth_chart_needs_an_age_and_the_same_reference(tiny_model: Path, radiograph: np.ndarray, tmp_path: Path) -> None:
    estimator = BoneAgeEstimator(tiny_model)
    with pytest.raises(InputError, match="needs the child's age"):
        estimator.plot(estimator.predict(radiograph, male=True), tmp_path / "c.png")
    other = load_reference().model_copy(update={"name": "another"})
    with pytest.raises(InputError, match="compared with"):
        growth_chart(estimator.predict(radiograph, male=True, age_months=250), other, tmp_path / "c.png")
    # an age outside the reference is still drawn, with the note instead of an SDS
    assert estimator.plot(estimator.predict(radiograph, male=False, age_months=250), tmp_path / "c.png").is_file()


@pytest.mark.data
def test_on_a_real_radiograph_the_hand_scores_higher_than_the_background(data_dir: Path) -> None:
    path = data_dir / "rsna-512" / "10097.png"  # a validation girl of 10y 6m (bone age reading)
    if not path.is_file():
        pytest.skip(f"{path} is not there")
    ex = BoneAgeEstimator(threads=2).explain(path, male=False, age_months=132)  # the shipped model
    gray = np.rint(ex.model_input * 255).astype(np.uint8)
    _, hand = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    assert 0.1 < hand.mean() < 0.6  # Otsu found a hand, not the whole image
    assert ex.heatmap[hand == 1].mean() > 2.5 * ex.heatmap[hand == 0].mean()
    assert ex.on_original and ex.heat.shape == cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).shape
