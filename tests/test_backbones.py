"""The built-in backbones: forward passes on TensorFlow (and JAX where installed), parameter counts."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("keras", reason="needs Keras and TensorFlow (extra: train)")
pytestmark = pytest.mark.tensorflow

from boneage import plugins  # noqa: E402

# The reference design's counts (parameters at 256 px); we must be within 5%.
REFERENCE = {"densenet121": 7.1e6, "resnet34_cbam": 22.6e6}


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_forward_pass_and_output_in_months(name: str) -> None:
    model = plugins.get("backbones", name).build(64)
    assert [i.name for i in model.inputs] == ["image", "male"] or {i.name for i in model.inputs} == {"image", "male"}
    x = {"image": np.random.default_rng(0).random((2, 64, 64, 1), np.float32), "male": np.array([[1.0], [0.0]], np.float32)}
    out = np.asarray(model(x, training=False))
    assert out.shape == (2, 1) and np.all(np.isfinite(out))
    assert 60 < float(out.mean()) < 200  # an untrained head sits near the mean age, in months


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_parameter_count_matches_reference(name: str) -> None:
    spec = plugins.get("backbones", name)
    count = spec.build(spec.default_input_size).count_params()
    assert abs(count / REFERENCE[name] - 1) < 0.05, f"{name}: {count:,} vs {REFERENCE[name]:,.0f}"


JAX_CODE = """
import numpy as np
from boneage import plugins
for name in ("densenet121", "resnet34_cbam"):
    model = plugins.get("backbones", name).build(64)
    out = np.asarray(model({"image": np.zeros((1, 64, 64, 1), np.float32), "male": np.ones((1, 1), np.float32)}))
    assert out.shape == (1, 1) and np.isfinite(out).all(), out
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("jax") is None, reason="JAX is not installed (pip install jax)")
def test_forward_pass_on_jax() -> None:
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    out = subprocess.run([sys.executable, "-c", JAX_CODE], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
