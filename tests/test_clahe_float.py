"""``keep_float`` on resize and CLAHE: OpenCV's CLAHE without its roundings to 8 bits (issue 18),
which must be OpenCV's CLAHE on 8-bit images and move less when a radiograph is cropped by a pixel."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from boneage.preprocess import PreprocessConfig, StepConfig, build_pipeline
from boneage.preprocess.clahe import clahe_float


def recipe(keep_float: bool) -> PreprocessConfig:
    """The campaign's steps (recipes/densenet121-100.toml), with or without keep_float."""
    extra = {"keep_float": True} if keep_float else {}
    return PreprocessConfig(steps=(
        StepConfig(name="grayscale"),
        StepConfig(name="resize", params={"size": 100, "mode": "stretch", "interpolation": "area", **extra}),
        StepConfig(name="clahe", params={"tile_grid": 2, **extra}),
        StepConfig(name="normalize"),
    ))


@pytest.fixture(scope="module")
def plates(data_dir: Path) -> list[np.ndarray]:
    paths = sorted((data_dir / "rsna-512").glob("*.png"))[:12]
    return [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]


@pytest.mark.parametrize("tiles", [2, 8])
def test_on_8_bit_images_it_is_opencvs_clahe_within_a_grey_level(plates: list[np.ndarray], tiles: int) -> None:
    for plate in plates:
        for image in (cv2.resize(plate, (100, 100), interpolation=cv2.INTER_AREA), plate[:97, :131]):  # odd sizes pad
            ours = clahe_float(image, 2.0, tiles)
            theirs = cv2.createCLAHE(2.0, (tiles, tiles)).apply(image)
            assert ours.dtype == np.float32 and ours.shape == image.shape
            assert np.abs(ours - theirs).max() <= 1.0
            assert np.abs(ours - theirs).mean() < 0.5  # the tables and the output rounded, nothing else


def test_it_is_continuous_in_its_input() -> None:
    """A quarter of a grey level in, a fraction of a level out: 8-bit CLAHE gives whole levels or nothing."""
    ramp = np.tile(np.linspace(90, 110, 64, dtype=np.float32), (64, 1))  # a low-contrast plate: steep tables
    moved = np.abs(clahe_float(ramp + 0.25, 2.0, 2) - clahe_float(ramp, 2.0, 2))
    assert 0 < moved.max() < 2.0
    rounded = np.abs(cv2.createCLAHE(2.0, (2, 2)).apply(np.rint(ramp + 0.25).astype(np.uint8)).astype(np.float32)
                     - cv2.createCLAHE(2.0, (2, 2)).apply(np.rint(ramp).astype(np.uint8)))
    assert rounded.max() >= 2.0


def test_a_1_px_crop_moves_the_model_input_less(plates: list[np.ndarray]) -> None:
    """What keep_float is for: the same radiograph cropped by a pixel gives a closer model input. On
    average only about 10% closer (the crop's own change dominates), but the rounding it removes is
    what moved the low-contrast plates' answers most (docs/benchmarks.md)."""
    change = {}
    for keep_float in (False, True):
        pipeline = build_pipeline(recipe(keep_float))
        change[keep_float] = np.mean([np.abs(pipeline(p[1:]) - pipeline(p)).mean() for p in plates])
    assert change[True] < 0.95 * change[False], change  # measured 0.89


def test_the_steps_keep_float_only_when_asked(plates: list[np.ndarray]) -> None:
    plate = plates[0]
    assert build_pipeline(recipe(False))(plate).dtype == np.float32  # normalize's output, as before
    kept = build_pipeline(recipe(True))(plate)
    assert kept.dtype == np.float32 and kept.shape == (100, 100, 1) and kept.min() >= 0 and kept.max() <= 1
    # a 100-px image (the training data) is not resized, so keep_float changes only CLAHE's rounding there
    small = cv2.resize(plate, (100, 100), interpolation=cv2.INTER_AREA)
    assert np.abs(build_pipeline(recipe(True))(small) - build_pipeline(recipe(False))(small)).max() <= 1 / 255 + 1e-6
    # OpenCV's CLAHE after a kept-float resize: the resized image is rounded for it, not refused
    mixed = PreprocessConfig(steps=(StepConfig(name="grayscale"),
                                    StepConfig(name="resize", params={"size": 100, "mode": "stretch", "keep_float": True}),
                                    StepConfig(name="clahe"), StepConfig(name="normalize")))
    assert build_pipeline(mixed)(plate).shape == (100, 100, 1)


def test_the_recipe_trains_on_images_of_any_size(data_dir: Path) -> None:
    """Augmenting before CLAHE holds the resized images in one stack: with keep_float every one is float32
    (a 512-px image resized and a 100-px one passed through gave float32 and uint8: refused), and the
    augmentation keeps them float, as inference sees them."""
    pytest.importorskip("keras", reason="the array data path needs Keras")
    from boneage.training.arrays import ArrayBatches, load_split_arrays
    from boneage.training.config import Augment
    from boneage.training.data import Record

    records = [Record(p.stem, p, 120.0, True) for folder in ("rsna-512", "rsna-100")
               for p in sorted((data_dir / folder).glob("*.png"))[:4]]
    arrays = load_split_arrays(records, recipe(True), workers=2)
    assert arrays.images.dtype == np.float32 and arrays.images.shape == (8, 100, 100)
    batch = ArrayBatches(arrays, 8, aug=Augment(before_preprocessing=True), seed=0)[0][0]["image"]
    assert batch.shape == (8, 100, 100, 1) and np.isfinite(batch).all()
    assert not np.allclose(batch * 255, np.rint(batch * 255), atol=1e-3)  # CLAHE's output not rounded to levels
