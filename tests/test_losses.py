"""``loss = "l1_mse"``: |e| + e^2 on errors scaled by the training labels' SD, the alternative to Huber
that issue 14 asks to measure; it must compute what it says, survive a checkpoint and a resume."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.test_training import small_config

pytestmark = pytest.mark.tensorflow
keras = pytest.importorskip("keras", reason="needs Keras (extra: train)")


def test_l1_mse_is_abs_plus_square_of_the_scaled_error() -> None:
    from boneage.training.losses import L1PlusMSE

    truth = np.array([[100.0], [50.0], [200.0]], np.float32)
    pred = np.array([[110.0], [50.0], [120.0]], np.float32)
    error = (pred - truth) / 40.0
    expected = float(np.mean(np.abs(error) + error**2))
    assert float(L1PlusMSE(scale=40.0)(truth, pred)) == pytest.approx(expected, rel=1e-6)
    assert float(L1PlusMSE(scale=40.0)(truth, truth)) == 0.0


def test_the_loss_round_trips_with_its_scale() -> None:
    from boneage.training.losses import L1PlusMSE

    again = keras.losses.deserialize(keras.losses.serialize(L1PlusMSE(scale=41.5)))
    assert isinstance(again, L1PlusMSE) and again.scale == 41.5


def test_the_config_names_the_loss_and_refuses_others(tmp_path: Path, data_dir: Path) -> None:
    assert small_config(data_dir, tmp_path).loss == "huber"  # the default, as every run so far
    with pytest.raises(ValueError, match="loss"):
        small_config(data_dir, tmp_path, loss="l2")


def test_a_run_trains_and_resumes_with_l1_mse(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests import tiny_backbone

    tiny_backbone.register()
    from boneage.training import train as training
    from boneage.training.data import prepare_data
    from boneage.training.losses import L1PlusMSE, build_loss
    from boneage.training.train import TrainingInterrupted, train

    config = small_config(data_dir, tmp_path / "run", loss="l1_mse", epochs=2, limit=128, val_limit=64)
    compiled: list[Any] = []

    def spy(*args: Any) -> Any:
        compiled.append(build_loss(*args))
        return compiled[-1]

    fit = keras.Model.fit
    calls = {"n": 0}

    def interrupted_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # stopped in the second epoch
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(training, "build_loss", spy)
    monkeypatch.setattr(keras.Model, "fit", interrupted_fit)
    with pytest.raises(TrainingInterrupted):
        train(config, verbose=0)
    monkeypatch.setattr(keras.Model, "fit", fit)
    run = train(config, resume=True, verbose=0)
    std = float(np.std([r.boneage for r in prepare_data(config)[0]]))
    # the new run and the resumed one (recompiled after loading the checkpoint) both use L1 + MSE at the labels' SD
    assert [type(loss) for loss in (compiled[0], compiled[-1])] == [L1PlusMSE, L1PlusMSE]
    assert compiled[0].scale == compiled[-1].scale == pytest.approx(std, rel=1e-6)
    assert json.loads((run / "config.json").read_text())["loss"] == "l1_mse"
    assert json.loads((run / "state.json").read_text())["epoch"] == 2
