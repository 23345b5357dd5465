"""``augment.before_preprocessing``: the arrays path augments the resized image and runs the later steps
(CLAHE) after it, so training sees what inference sees when a radiograph is shifted or re-encoded (issue 18).

Keras but not TensorFlow: the arrays path runs on any backend.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest

from boneage.errors import ConfigError
from boneage.imageio import load_image
from boneage.preprocess import PreprocessConfig, StepConfig, build_pipeline
from boneage.training.config import Augment, DataSource, TrainConfig, load_config
from boneage.training.data import Record, read_source

pytestmark = pytest.mark.keras
keras = pytest.importorskip("keras", reason="needs Keras (extra: train, train-torch or train-jax)")

FULL = PreprocessConfig.default(100)
BEFORE = Augment(before_preprocessing=True)


@pytest.fixture(scope="module")
def records(data_dir: Path) -> list[Record]:
    return read_source(DataSource(labels=data_dir / "rsna-100/labels.csv", images=data_dir / "rsna-100"))[:24]


def config(data_dir: Path, **changes: object) -> TrainConfig:
    base = {"sources": [{"labels": str(data_dir / "rsna-100/labels.csv"), "images": str(data_dir / "rsna-100")}],
            "augment": {"before_preprocessing": True}, "batch_size": 8, "workers": 2}
    return TrainConfig.model_validate({**base, **changes})


def test_validation_and_unaugmented_batches_are_the_inference_pipelines_output(data_dir: Path,
                                                                                records: list[Record]) -> None:
    from boneage.training.arrays import ArrayBatches, load_split_arrays
    from boneage.training.train import datasets

    expected = np.stack([build_pipeline(FULL)(load_image(r.path)) for r in records])
    count, epoch_batches, val = datasets(config(data_dir), records[:16], records[16:])
    assert count == 16
    train = epoch_batches(0)
    assert train.data.images.dtype == np.uint8 and train.data.images.shape == (16, 100, 100)  # a quarter of float32
    assert np.array_equal(val[0][0]["image"], expected[16:])  # pre and post once at load: exactly inference's input
    plain = ArrayBatches(load_split_arrays(records, FULL, workers=2), 8)  # no aug: post on the stored pre output
    assert np.array_equal(np.concatenate([plain[i][0]["image"] for i in range(3)]), expected)


def test_augmented_batches_differ_and_are_fixed_by_seed_epoch_and_batch(records: list[Record]) -> None:
    from boneage.training.arrays import ArrayBatches, load_split_arrays

    arrays = load_split_arrays(records, FULL, workers=2)
    one = ArrayBatches(arrays, 8, aug=BEFORE, seed=3, epoch=1)
    batches = [one[i] for i in range(len(one))]
    for b, (x, y) in enumerate(batches):
        idx = one.order[b * 8 : (b + 1) * 8]
        assert np.array_equal(y, arrays.ages[idx]) and x["image"].shape == (8, 100, 100, 1)
        unaugmented = np.stack([arrays.post(arrays.images[i]) for i in idx])
        assert all(not np.array_equal(a, u) for a, u in zip(x["image"], unaugmented, strict=True))
    # Keras's workers call __getitem__ from threads in any order: the same batches whatever their number
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(ArrayBatches(arrays, 8, aug=BEFORE, seed=3, epoch=1).__getitem__, [2, 0, 1]))
    for (x, y), (tx, ty) in zip(batches, [threaded[1], threaded[2], threaded[0]], strict=True):
        assert np.array_equal(x["image"], tx["image"]) and np.array_equal(y, ty)
    resumed = ArrayBatches(arrays, 8, aug=BEFORE, seed=3, epoch=1, first=2)
    assert np.array_equal(resumed[0][0]["image"], batches[2][0]["image"])
    assert not np.array_equal(ArrayBatches(arrays, 8, aug=BEFORE, seed=4, epoch=1)[0][0]["image"], batches[0][0]["image"])


def test_clahe_runs_on_the_augmented_image(records: list[Record]) -> None:
    from boneage.training.arrays import ArrayBatches, augment_image, load_split_arrays

    arrays = load_split_arrays(records, FULL, workers=2)
    batches = ArrayBatches(arrays, 8, aug=BEFORE, seed=5, epoch=2)
    x, _ = batches[1]
    order = batches.order[8:16]
    rng = np.random.default_rng([5, 2, 1])  # the batch's stream, drawn image by image as the batch does
    clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))
    for got, i in zip(x["image"], order, strict=True):
        plane = augment_image(arrays.images[i][..., None].astype(np.float32) / 255, BEFORE, rng)
        warped = np.rint(plane[..., 0] * 255).astype(np.uint8)
        assert np.array_equal(got[..., 0], clahe.apply(warped).astype(np.float32) / 255)
    # not the old path (the same draws on CLAHE's output): equalizing after the warp gives another input
    again = np.random.default_rng([5, 2, 1])
    after = np.stack([augment_image(arrays.post(arrays.images[i]), BEFORE, again) for i in order])
    assert np.abs(after - x["image"]).mean() > 0.01


def test_only_the_arrays_path_does_it() -> None:
    from boneage.training.train import uses_arrays

    sources = {"sources": [{"labels": "l.csv", "images": "img"}], "augment.before_preprocessing": True}
    with pytest.raises(ConfigError, match="tf.data"):
        load_config(None, {**sources, "data_pipeline": "tf.data"})
    assert uses_arrays(load_config(None, sources))  # "auto" picks the arrays path, on TensorFlow too
    with pytest.raises(ConfigError, match="no resize step"):
        load_config(None, {**sources, "preprocessing": {"steps": [{"name": "grayscale"}, {"name": "normalize"}]}})
    assert not load_config(None, {"sources": sources["sources"]}).augment.before_preprocessing  # off by default


def test_steps_that_give_no_8_or_16_bit_channel_are_refused(tmp_path: Path) -> None:
    from boneage.training.arrays import load_split_arrays

    cv2.imwrite(str(tmp_path / "a.png"), np.full((48, 40), 200, np.uint8))
    cv2.imwrite(str(tmp_path / "b.png"), np.full((48, 40), 50000, np.uint16))
    recs = [Record(n, tmp_path / f"{n}.png", 100.0, True) for n in "ab"]
    no_gray = PreprocessConfig(steps=(StepConfig(name="resize", params={"size": 32}), StepConfig(name="normalize")))
    with pytest.raises(ConfigError, match="one kind and size"):  # uint8 and uint16 would be stacked as one, unscaled
        load_split_arrays(recs, no_gray, workers=1)
    assert load_split_arrays(recs, PreprocessConfig.default(32), workers=1).images.dtype == np.uint8  # grayscale first: fine
