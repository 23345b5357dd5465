"""A model trained elsewhere (here: Keras on the JAX backend) reloads, exports and serves here."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_training import small_config

pytestmark = [
    pytest.mark.tensorflow,
    pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed (pip install jax)"),
]
pytest.importorskip("tf2onnx", reason="needs TensorFlow and tf2onnx (extra: train)")

TRAIN_ON_JAX = """
import sys
import keras
from tests import tiny_backbone
from boneage.training.config import TrainConfig
from boneage.training.train import train
tiny_backbone.register()
train(TrainConfig.model_validate_json(sys.argv[1]), verbose=0)
print(keras.backend.backend())
"""


def test_model_trained_on_jax_exports_and_serves(data_dir: Path, tmp_path: Path) -> None:
    from boneage import BoneAgeEstimator
    from boneage.export.export import export_run

    config = small_config(data_dir, tmp_path / "run", epochs=1, limit=96, val_limit=32,
                          augment={"rotation_deg": 5, "shift": 0.05})
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    root = Path(__file__).parent.parent
    out = subprocess.run([sys.executable, "-c", TRAIN_ON_JAX, config.model_dump_json()], cwd=root, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and out.stdout.split()[-1:] == ["jax"], out.stderr[-2000:]
    with (tmp_path / "run" / "history.csv").open() as f:
        jax_val_mae = float(list(csv.DictReader(f))[-1]["val_mae"])

    from tests import tiny_backbone

    tiny_backbone.register()  # export builds the run's backbone and loads the file's weights into it
    (entry,) = export_run(tmp_path / "run", "0.0.1", tmp_path / "models")  # here: TensorFlow + tf2onnx
    assert abs(entry.metrics["mae"] - jax_val_mae) < 0.05, (entry.metrics["mae"], jax_val_mae)
    estimator = BoneAgeEstimator(tmp_path / "models" / entry.file)
    assert 0 < estimator.predict(data_dir / "rsna-100" / "1377.png", male=False).bone_age_months < 300
