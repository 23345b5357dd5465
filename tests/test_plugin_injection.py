"""The plugin registry is a dependency that is passed in, not a global that is reached for: an
estimator (and the pipeline it builds, down to the ``hand_crop`` step's cropper) uses the
:class:`Plugins` it is given, and registering in one registry leaves the other as it was (issue 20,
item 1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from boneage import BoneAgeEstimator, hookimpl, plugins
from boneage.errors import PluginError, PluginNotFoundError
from boneage.preprocess import PreprocessConfig, StepConfig, build_pipeline
from boneage.specs import CropperSpec, RuntimeSpec, StepSpec
from tests.helpers import tiny_card, write_tiny_model
from tests.test_plugins import ConstantRuntime

SIZE = 64


class Parts:
    """A plugin with a cropper, a step that looks up a cropper itself (``takes_plugins``) and a
    runtime; ``seen`` records what each was given."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    def _cropper(self, params: Any) -> Any:
        def crop(image: np.ndarray, trace: Any) -> np.ndarray:
            self.seen.append(("crop", image.shape))
            return image

        return crop

    def _step(self, params: Any, plugins: plugins.Plugins) -> Any:
        self.seen.append(("step built with", plugins))
        return plugins.get("croppers", "private_crop").spec.build(params)

    @hookimpl
    def boneage_register_croppers(self) -> list[CropperSpec]:
        return [CropperSpec(name="private_crop", build=self._cropper)]

    @hookimpl
    def boneage_register_preprocess_steps(self) -> list[StepSpec]:
        return [StepSpec(name="private_step", build=self._step, takes_plugins=True)]

    @hookimpl
    def boneage_register_runtimes(self) -> list[RuntimeSpec]:
        return [RuntimeSpec(name="private_runtime", load=lambda model, threads: ConstantRuntime())]


def cropping_model(path: Path) -> Path:
    """A model whose card crops with ``private_crop`` (through the built-in ``hand_crop`` step)."""
    steps = (StepConfig(name="grayscale"), StepConfig(name="hand_crop", params={"cropper": "private_crop"}),
             StepConfig(name="resize", params={"size": SIZE}), StepConfig(name="normalize"))
    return write_tiny_model(path, SIZE, tiny_card(SIZE, preprocessing=PreprocessConfig(steps=steps)))


def test_an_estimator_uses_the_registry_it_is_given(tmp_path: Path, models_dir: Path, radiograph: np.ndarray) -> None:
    parts = Parts()
    private = plugins.Plugins(autoload=False)
    private.register(parts, "private 1.0", name="private")
    model = cropping_model(tmp_path / "crop.onnx")

    estimator = BoneAgeEstimator(model, runtime="private_runtime", plugins=private)
    assert estimator.plugins is private and estimator.pipeline.plugins is private
    parts.seen.clear()  # the output check at load ran the cropper once
    assert estimator.predict(radiograph, male=True).bone_age_months == pytest.approx(42.0)
    assert parts.seen == [("crop", radiograph.shape)]  # the built-in hand_crop found the private cropper

    manager = plugins.get_plugins()  # the process-wide registry never saw any of it
    assert not manager.pm.has_plugin("private")
    for kind, name in (("croppers", "private_crop"), ("runtimes", "private_runtime")):
        assert name not in manager.registry(kind)
    with pytest.raises(PluginNotFoundError, match="no cropper named 'private_crop'"):
        BoneAgeEstimator(model, runtime="onnx")
    with pytest.raises(PluginNotFoundError, match="no runtime named 'private_runtime'"):
        BoneAgeEstimator(tmp_path / "crop.onnx", runtime="private_runtime")


def test_registering_globally_leaves_a_private_registry_as_it_was(tmp_path: Path, models_dir: Path) -> None:
    plugins.get_plugins().register(Parts(), "global 1.0", name="global")
    private = plugins.Plugins(autoload=False)
    assert "private_crop" not in private.registry("croppers") and not private.pm.has_plugin("global")
    model = cropping_model(tmp_path / "crop.onnx")
    assert BoneAgeEstimator(model).pipeline.plugins is plugins.get_plugins()  # the default
    with pytest.raises(PluginNotFoundError, match="no cropper named 'private_crop'"):
        BoneAgeEstimator(model, plugins=private)


def test_a_step_that_takes_plugins_gets_the_pipelines_registry() -> None:
    parts = Parts()
    private = plugins.Plugins(autoload=False)
    private.register(parts, "private 1.0", name="private")
    pipeline = build_pipeline(PreprocessConfig(steps=(StepConfig(name="private_step"),)), private)
    assert parts.seen == [("step built with", private)]
    image = np.zeros((8, 6), np.uint8)
    assert pipeline.raw(image) is image and parts.seen[-1] == ("crop", (8, 6))
    with pytest.raises(PluginNotFoundError, match="no preprocess step named 'private_step'"):
        build_pipeline(PreprocessConfig(steps=(StepConfig(name="private_step"),)))  # not in the global one


def test_takes_plugins_must_be_a_bool() -> None:
    class Bad:
        @hookimpl
        def boneage_register_preprocess_steps(self) -> list[StepSpec]:
            return [StepSpec(name="bad", build=lambda params: None, takes_plugins="yes")]  # type: ignore[arg-type]

    with pytest.raises(PluginError, match=r"StepSpec.takes_plugins must be a bool, not 'yes'"):
        plugins.Plugins(autoload=False).register(Bad(), "bad 1.0")
