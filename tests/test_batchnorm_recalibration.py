"""Batch-norm statistics recomputed on clean images before validation (``bn_recalibration``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from boneage.errors import ConfigError

keras = pytest.importorskip("keras", reason="needs Keras (extra: train)")


def one_bn_model() -> Any:
    """One batch-norm layer on the image: its statistics are the image's."""
    image = keras.Input((8, 8, 1), name="image")
    male = keras.Input((1,), name="male")
    x = keras.layers.BatchNormalization(momentum=0.99)(image)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model({"image": image, "male": male}, keras.layers.Concatenate()([x, male]))


def test_recalibration_sets_the_mean_of_the_batch_statistics() -> None:
    from boneage.training.batchnorm import batchnorm_layers, recalibrate

    model = one_bn_model()
    rng = np.random.default_rng(0)
    images = rng.normal(3.0, 2.0, (40, 8, 8, 1)).astype(np.float32)
    male = np.ones((40, 1), np.float32)
    (layer,) = batchnorm_layers(model)
    assert recalibrate(model, images, male, batch_size=16) == 1
    batches = [images[s : s + 16] for s in range(0, 40, 16)]
    assert np.asarray(layer.moving_mean)[0] == pytest.approx(np.mean([b.mean() for b in batches]), rel=1e-5)
    assert np.asarray(layer.moving_variance)[0] == pytest.approx(np.mean([b.var() for b in batches]), rel=1e-4)
    assert layer.momentum == 0.99  # restored


def test_recalibration_is_refused_with_data_parallel() -> None:
    from boneage.training.config import load_config

    source = {"sources": [{"labels": "labels.csv", "images": "images"}]}
    with pytest.raises(ConfigError, match="data_parallel"):
        load_config(None, {**source, "bn_recalibration": 64, "data_parallel": True})
    with pytest.raises(ConfigError, match="bn_recalibration"):
        load_config(None, {**source, "bn_recalibration": -1})


@pytest.mark.tensorflow
def test_a_run_validates_and_saves_with_statistics_of_clean_images(data_dir: Path, tmp_path: Path) -> None:
    # trained on noisy, brightened batches, the running statistics describe those; recalibrated before
    # validation, best.keras holds statistics that a second recalibration on the same images leaves as they are
    from boneage.training.batchnorm import batchnorm_layers, recalibrate
    from boneage.training.config import TrainConfig
    from boneage.training.train import recalibration, train
    from tests import tiny_backbone

    tiny_backbone.register()
    config = TrainConfig.model_validate({
        "backbone": "tiny_cnn", "input_size": 64, "limit": 128, "val_limit": 32, "batch_size": 32, "epochs": 1,
        "sources": [{"labels": str(data_dir / "rsna-100/labels.csv"), "images": str(data_dir / "rsna-100")}],
        "augment": {"brightness": 0.3, "noise": 0.1}, "bn_recalibration": 64, "output_dir": str(tmp_path / "run"),
    })
    run = train(config, verbose=0)
    model = keras.saving.load_model(run / "best.keras", compile=False)
    layers = batchnorm_layers(model)
    saved = [np.asarray(layer.moving_mean).copy() for layer in layers]
    from boneage.training.data import prepare_data

    (callback,) = recalibration(config, prepare_data(config)[0])
    recalibrate(model, callback.images, callback.male, config.batch_size)
    for layer, before in zip(layers, saved, strict=True):
        np.testing.assert_allclose(np.asarray(layer.moving_mean), before, rtol=1e-3, atol=1e-4)
    assert json.loads((run / "config.json").read_text())["bn_recalibration"] == 64
