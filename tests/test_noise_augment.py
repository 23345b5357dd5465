"""``augment.noise``: Gaussian noise on the model's input during training only (issue 18: a model
trained without it moved its answer by up to 10.8 months under noise of one grey level)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from boneage.preprocess import PreprocessConfig, build_pipeline
from boneage.training.config import Augment, DataSource
from boneage.training.data import Record, read_source

pytestmark = pytest.mark.keras
keras = pytest.importorskip("keras", reason="needs Keras (extra: train, train-torch or train-jax)")

FULL = PreprocessConfig.default(100)


@pytest.fixture(scope="module")
def records(data_dir: Path) -> list[Record]:
    return read_source(DataSource(labels=data_dir / "rsna-100/labels.csv", images=data_dir / "rsna-100"))[:16]


@pytest.mark.parametrize("before", [False, True])
def test_noise_is_added_after_preprocessing_with_the_asked_spread_and_a_fixed_stream(records: list[Record],
                                                                                     before: bool) -> None:
    from boneage.training.arrays import ArrayBatches, load_arrays, load_split_arrays

    arrays = load_split_arrays(records, FULL, workers=2) if before else load_arrays(records, build_pipeline(FULL), 2)
    # noise alone: the rest of the augmentation off, so the difference is the noise and nothing else
    quiet = dict(rotation_deg=0, shift=0, zoom=0, brightness=0, contrast=0, before_preprocessing=before)
    assert Augment(**quiet).enabled is False and Augment(**quiet, noise=0.02).enabled is True
    clean = ArrayBatches(arrays, 8)[0][0]["image"]
    noisy = ArrayBatches(arrays, 8, aug=Augment(**quiet, noise=0.02), seed=1)
    order = noisy.order[:8]
    diff = noisy[0][0]["image"] - ArrayBatches(arrays, 16)[0][0]["image"][order]
    assert diff.dtype == np.float32 and clean.shape == diff.shape
    assert 0.018 < diff.std() < 0.022 and abs(diff.mean()) < 0.002  # the asked spread, centred
    assert (noisy[0][0]["image"] < 0).any()  # not clipped: the background is noisy too
    again = ArrayBatches(arrays, 8, aug=Augment(**quiet, noise=0.02), seed=1)
    assert np.array_equal(again[0][0]["image"], noisy[0][0]["image"])  # a resumed run draws the same noise


def test_noise_is_bounded_and_off_by_default() -> None:
    assert Augment().noise == 0.0
    with pytest.raises(ValueError):
        Augment(noise=-0.1)
    with pytest.raises(ValueError):
        Augment(noise=0.5)


def test_the_tf_data_path_adds_noise_of_the_asked_spread(records: list[Record]) -> None:
    tf = pytest.importorskip("tensorflow", reason="the tf.data path needs TensorFlow")
    from boneage.training.data import training_batches

    images = np.full((16, 100, 100, 1), 0.5, np.float32)
    cached = tf.data.Dataset.from_tensor_slices(({"image": images, "male": np.ones((16, 1), np.float32)},
                                                 np.zeros((16, 1), np.float32)))
    quiet = Augment(rotation_deg=0, shift=0, zoom=0, brightness=0, contrast=0, noise=0.02)
    batch = next(iter(training_batches(cached, 16, 16, quiet, seed=0)))[0]["image"].numpy()
    assert 0.018 < (batch - 0.5).std() < 0.022
