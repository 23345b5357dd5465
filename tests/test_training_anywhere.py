"""Training on any Keras backend: the in-memory data path, the schedule, the time limit, and a
run killed with SIGKILL in the middle of an epoch that resumes exactly.

These need Keras but not TensorFlow: ``nox -s tests_torch`` runs them on PyTorch with no
TensorFlow installed, ``nox -s tests_full`` on TensorFlow.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.keras
keras = pytest.importorskip("keras", reason="needs Keras (extra: train, train-torch or train-jax)")

ROOT = Path(__file__).parent.parent

# Train in a fresh interpreter (the backend is chosen at import), with the tiny test backbone.
TRAIN = """
import sys
from tests import tiny_backbone
from boneage.training.config import TrainConfig
from boneage.training.train import train
tiny_backbone.register()
train(TrainConfig.model_validate_json(sys.argv[1]), resume=sys.argv[2] == "resume", verbose=0)
print("tensorflow imported" if "tensorflow" in sys.modules else "no tensorflow")
"""


def config_json(data_dir: Path, out: Path, **changes: Any) -> str:
    from tests.test_training import small_config

    base: dict[str, Any] = {"epochs": 2, "limit": 256, "val_limit": 64, "data_pipeline": "arrays",
                            "backbone_options": {"dropout": 0.0}}
    return small_config(data_dir, out, **{**base, **changes}).model_dump_json()


def start(config: str, resume: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", TRAIN, config, "resume" if resume else "new"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    return out


def predictions(run: Path, data_dir: Path, config: str) -> np.ndarray:
    from boneage import plugins
    from boneage.backbones import load_keras_model
    from boneage.preprocess import build_pipeline
    from boneage.training.arrays import load_arrays
    from boneage.training.config import TrainConfig
    from boneage.training.data import prepare_data
    from tests import tiny_backbone

    parsed = TrainConfig.model_validate_json(config)
    _, val = prepare_data(parsed)
    arrays = load_arrays(val, build_pipeline(parsed.resolved_preprocessing()))
    if parsed.backbone not in plugins.get_plugins().registry("backbones"):
        tiny_backbone.register()  # the run's backbone, which the weights are read into
    model = load_keras_model(run / "best.keras", parsed.backbone, parsed.input_size, parsed.backbone_options)
    return np.asarray(model.predict_on_batch({"image": arrays.images, "male": arrays.male})).reshape(-1)


def test_schedule_is_keras_cosine_decay_with_warmup() -> None:
    from boneage.training.schedule import WarmupCosine, lr_at

    ours = WarmupCosine(5e-3, warmup_steps=10, total_steps=110)
    reference = keras.optimizers.schedules.CosineDecay(5e-5, decay_steps=100, warmup_target=5e-3, warmup_steps=10,
                                                       alpha=0.01)
    for step in (0, 1, 5, 10, 11, 60, 109, 110, 200):
        assert lr_at(ours, step) == pytest.approx(lr_at(reference, step), rel=1e-5), step
    again = WarmupCosine.from_config(ours.get_config())
    assert lr_at(again, 60) == lr_at(ours, 60)


def test_array_batches_are_reproducible_and_resume_inside_an_epoch() -> None:
    from boneage.training.arrays import ArrayBatches, Arrays
    from boneage.training.config import Augment

    rng = np.random.default_rng(0)
    data = Arrays(rng.random((50, 32, 32, 1), dtype=np.float32), np.ones((50, 1), np.float32),
                  np.arange(50, dtype=np.float32)[:, None])
    aug = Augment()
    one = ArrayBatches(data, 8, aug=aug, seed=3, epoch=1)
    assert len(one) == 7
    batches = [one[i] for i in range(len(one))]
    assert sorted(np.concatenate([y for _, y in batches]).ravel().tolist()) == list(range(50))  # each image once
    again = ArrayBatches(data, 8, aug=aug, seed=3, epoch=1, first=4)
    assert len(again) == 3
    for i in range(3):
        assert np.array_equal(again[i][0]["image"], batches[4 + i][0]["image"])
    # Keras's workers call __getitem__ from threads in any order: the same batches whatever their number
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(ArrayBatches(data, 8, aug=aug, seed=3, epoch=1, workers=4).__getitem__, range(6, -1, -1)))
    assert all(np.array_equal(x["image"], t[0]["image"]) for (x, _), t in zip(batches, threaded[::-1], strict=True))
    other_epoch = ArrayBatches(data, 8, aug=aug, seed=3, epoch=2)
    assert not np.array_equal(other_epoch[0][1], batches[0][1])
    images = np.concatenate([x["image"] for x, _ in batches])
    assert images.shape == (50, 32, 32, 1) and images.min() >= 0 and images.max() <= 1
    plain = ArrayBatches(data, 8, aug=Augment(rotation_deg=0, shift=0, zoom=0, brightness=0, contrast=0), epoch=1)
    x, y = plain[0]
    assert np.array_equal(x["image"], data.images[y[:, 0].astype(int)])  # no augmentation: the images themselves
    validation = ArrayBatches(data, 8)
    assert np.array_equal(validation[0][1], data.ages[:8])  # in order


def test_fitting_the_schedule_to_the_time_limit(tmp_path: Path) -> None:
    from boneage.training.config import TrainConfig
    from boneage.training.schedule import WarmupCosine
    from boneage.training.train import fit_epochs_to_time

    class Model:
        optimizer = type("Optimizer", (), {"_learning_rate": WarmupCosine(1e-3, 10, 2000)})()
        rebuilt = 0

        def make_train_function(self, force: bool = False) -> None:
            self.rebuilt += force

    config = TrainConfig.model_validate({"sources": [{"labels": "l.csv", "images": "i"}], "epochs": 200,
                                         "time_limit": 100, "fit_epochs_to_time": True, "output_dir": str(tmp_path)})
    model, state = Model(), {"epoch": 1}
    fitted = fit_epochs_to_time(config, model, state, 10, used=10, epoch_seconds=10)
    # 90 s left at 10 s an epoch, with 5% to spare: 8 more epochs
    assert fitted.epochs == 9 and model.optimizer._learning_rate.total_steps == 90 and model.rebuilt == 1
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 9
    state["epoch"] = 2
    faster = fit_epochs_to_time(fitted, model, state, 10, used=15, epoch_seconds=1)
    assert faster.epochs == 82 and state["max_epochs"] == 200
    assert fit_epochs_to_time(faster, model, {"epoch": 2, "max_epochs": 50}, 10, 15, 0.01).epochs == 50


def test_trains_without_tensorflow_on_another_backend(data_dir: Path, tmp_path: Path) -> None:
    """What a GPU box without TensorFlow runs (there: PyTorch or JAX). Skipped where the only
    backend is TensorFlow."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        pytest.skip("KERAS_BACKEND is tensorflow: nox -s tests_torch runs this on PyTorch without TensorFlow")
    config = config_json(data_dir, tmp_path / "run", epochs=2)
    assert finish(start(config)).split()[-2:] == ["no", "tensorflow"]
    with (tmp_path / "run" / "history.csv").open() as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1"]


def test_killed_inside_an_epoch_resumes_exactly(data_dir: Path, tmp_path: Path) -> None:
    """SIGKILL after a checkpoint inside the second epoch: --resume goes on from that batch, and
    the finished run predicts what an uninterrupted one does."""
    whole = config_json(data_dir, tmp_path / "whole")
    finish(start(whole))

    config = config_json(data_dir, tmp_path / "killed", checkpoint_minutes=1e-6)  # a checkpoint every batch
    state_path = tmp_path / "killed" / "state.json"
    process = start(config)
    deadline = time.monotonic() + 300
    state: dict[str, Any] = {}
    while time.monotonic() < deadline and process.poll() is None:
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError):
            state = {}
        if state.get("epoch") == 1 and state.get("batch", 0) >= 3:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    process.communicate()
    assert process.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {state}"
    state = json.loads(state_path.read_text())
    assert state["epoch"] == 1 and state["batch"] >= 3, state

    finish(start(config, resume=True))
    assert json.loads(state_path.read_text())["epoch"] == 2
    with (tmp_path / "killed" / "history.csv").open() as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0", "1"]
    difference = np.abs(predictions(tmp_path / "whole", data_dir, whole)
                        - predictions(tmp_path / "killed", data_dir, config)).max()
    assert difference < 0.05, difference


def test_time_limit_stops_inside_an_epoch_and_resumes(data_dir: Path, tmp_path: Path) -> None:
    config = config_json(data_dir, tmp_path / "run", epochs=2, time_limit=0.5)
    finish(start(config))
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["epoch"] < 2 and (state["epoch"] > 0 or state["batch"] > 0), state
    no_limit = json.loads(config) | {"time_limit": None}
    finish(start(json.dumps(no_limit), resume=True))
    assert json.loads((tmp_path / "run" / "state.json").read_text())["epoch"] == 2


def test_data_parallel_over_two_devices(data_dir: Path, tmp_path: Path) -> None:
    """Two logical CPU devices stand in for two GPUs. Short batches are padded with copies that
    weigh nothing, so the validation MAE is the one a single device computes."""
    pytest.importorskip("jax", reason="data-parallel training is shown on JAX (pip install jax)")
    config = config_json(data_dir, tmp_path / "run", epochs=1, limit=100, val_limit=37, data_parallel=True)
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    code = "import logging; logging.basicConfig(level=logging.INFO)\n" + TRAIN
    out = subprocess.run([sys.executable, "-c", code, config, "new"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "data-parallel over 2 devices" in out.stderr
    with (tmp_path / "run" / "history.csv").open() as f:
        logged = float(list(csv.DictReader(f))[-1]["val_mae"])
    from boneage.training.config import TrainConfig
    from boneage.training.data import prepare_data

    _, val = prepare_data(TrainConfig.model_validate_json(config))
    ages = np.array([r.boneage for r in val])
    assert len(ages) == 37
    assert np.abs(predictions(tmp_path / "run", data_dir, config) - ages).mean() == pytest.approx(logged, abs=0.01)
