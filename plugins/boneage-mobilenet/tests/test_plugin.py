"""The plugin's own tests: it registers through boneage's hooks and its parts work."""

from __future__ import annotations

import numpy as np
import pytest

from boneage import plugins
from boneage.preprocess import PreprocessConfig, StepConfig, build_pipeline


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    import boneage_mobilenet

    plugins.reset_plugins()
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    plugins.get_plugins().register(boneage_mobilenet, "boneage-mobilenet (test)", name="mobilenet")
    yield
    plugins.reset_plugins()


def test_unsharp_step_sharpens() -> None:
    image = np.zeros((64, 64), np.uint8)
    image[:, 32:] = 200
    out = build_pipeline(PreprocessConfig(steps=(StepConfig(name="unsharp", params={"amount": 1.0}),)))(image)
    assert out[0, 31, 0] < 1 and out[0, 32, 0] > 200  # overshoot on both sides of the edge


def test_backbone_builds_and_outputs_months() -> None:
    pytest.importorskip("keras")
    model = plugins.get("backbones", "mobilenet_v3_small").build(64)
    out = np.asarray(model({"image": np.zeros((2, 64, 64, 1), np.float32), "male": np.ones((2, 1), np.float32)}))
    assert out.shape == (2, 1) and np.isfinite(out).all()


def test_batch_norm_follows_short_runs() -> None:
    keras = pytest.importorskip("keras")
    model = plugins.get("backbones", "mobilenet_v3_small").build(64)
    found = [layer.momentum for layer in model.get_layer("MobileNetV3Small").layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert found and set(found) == {0.99}
