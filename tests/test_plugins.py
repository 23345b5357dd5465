"""The plugin API: every hook tested and documented, entry points lazy and fault-tolerant."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from boneage import BoneAgeEstimator, hookimpl, hookspecs, plugins
from boneage.errors import PluginError, PreprocessError
from boneage.preprocess import PreprocessConfig, StepConfig, build_pipeline
from boneage.specs import BackboneSpec, CropperSpec, RuntimeSpec, StepSpec

ROOT = Path(__file__).resolve().parents[1]


class FlipParams(BaseModel):
    axis: int = 1


class StepPlugin:
    @hookimpl
    def boneage_register_preprocess_steps(self) -> list[StepSpec]:
        return [StepSpec(name="flip", build=lambda p: (lambda image, trace: np.flip(image, p.axis)), params=FlipParams,
                         doc="mirror")]


class CropperPlugin:
    @hookimpl
    def boneage_register_croppers(self) -> list[CropperSpec]:
        return [CropperSpec(name="centre", build=lambda p: (lambda image, trace: image[10:-10, 10:-10]), doc="fixed border")]


class BackbonePlugin:
    @hookimpl
    def boneage_register_backbones(self) -> list[BackboneSpec]:
        return [BackboneSpec(name="toy", build=lambda size, **kw: ("toy-model", size, kw), default_input_size=32, doc="a toy")]


class ConstantRuntime:
    name = "constant"

    def predict(self, images: np.ndarray, male: np.ndarray) -> np.ndarray:
        return np.full(len(images), 42.0, np.float32)


class RuntimePlugin:
    @hookimpl
    def boneage_register_runtimes(self) -> list[RuntimeSpec]:
        return [RuntimeSpec(name="constant", load=lambda model, threads: ConstantRuntime(), doc="always 42")]


def register(plugin: object, source: str = "thirdparty 1.0") -> plugins.Plugins:
    manager = plugins.get_plugins()
    manager.register(plugin, source, name=type(plugin).__name__)
    return manager


def hook_preprocess_steps(radiograph: np.ndarray, tiny_model: Path) -> None:
    manager = register(StepPlugin())
    assert manager.registry("preprocess_steps")["flip"].source == "thirdparty 1.0"
    out = build_pipeline(PreprocessConfig(steps=(StepConfig(name="flip", params={"axis": 1}),)))(radiograph)
    assert np.array_equal(out[..., 0], np.flip(radiograph, 1).astype(np.float32))


class BrokenStepPlugin:
    @hookimpl
    def boneage_register_preprocess_steps(self) -> list[StepSpec]:
        def broken(image: np.ndarray, trace: object) -> np.ndarray:
            raise RuntimeError("division by zero somewhere in a plugin")

        return [StepSpec(name="broken", build=lambda p: broken, params=FlipParams, doc="always fails")]


def test_a_failing_plugin_step_is_a_typed_error(radiograph: np.ndarray) -> None:
    register(BrokenStepPlugin())
    run = build_pipeline(PreprocessConfig(steps=(StepConfig(name="broken"),)))
    with pytest.raises(PreprocessError, match="'broken' failed on this image: division by zero"):
        run(radiograph)


def hook_croppers(radiograph: np.ndarray, tiny_model: Path) -> None:
    register(CropperPlugin())
    out = build_pipeline(PreprocessConfig(steps=(StepConfig(name="hand_crop", params={"cropper": "centre"}),)))(radiograph)
    assert out.shape[:2] == (radiograph.shape[0] - 20, radiograph.shape[1] - 20)


def hook_backbones(radiograph: np.ndarray, tiny_model: Path) -> None:
    register(BackbonePlugin())
    spec = plugins.get("backbones", "toy")
    assert spec.build(spec.default_input_size, dropout=0.1) == ("toy-model", 32, {"dropout": 0.1})


def hook_runtimes(radiograph: np.ndarray, tiny_model: Path) -> None:
    register(RuntimePlugin())
    prediction = BoneAgeEstimator(tiny_model, runtime="constant").predict(radiograph, male=True)
    assert prediction.bone_age_months == 42.0 and prediction.runtime == "constant"


class ReferencePlugin:
    @hookimpl
    def boneage_register_references(self) -> list[Any]:
        from boneage.references import ReferenceTable
        from boneage.specs import ReferenceSpec

        rows = ((0.0, 10.0, 2.0), (240.0, 250.0, 2.0))
        table = ReferenceTable(name="flat", title="a test reference", source="made up", male=rows, female=rows)
        return [ReferenceSpec(name="flat", load=lambda: table, doc="BA = CA + 10 months, SD 2")]


def hook_references(radiograph: np.ndarray, tiny_model: Path) -> None:
    register(ReferencePlugin())
    prediction = BoneAgeEstimator(tiny_model, reference="flat").predict(radiograph, male=True, age_months=100)
    assert prediction.comparison is not None and prediction.comparison.reference == "flat"
    assert prediction.comparison.expected_bone_age_months == 110.0 and prediction.comparison.sd_months == 2.0


HOOK_TESTS: dict[str, Callable[..., None]] = {
    "boneage_register_references": hook_references,
    "boneage_register_preprocess_steps": hook_preprocess_steps,
    "boneage_register_croppers": hook_croppers,
    "boneage_register_backbones": hook_backbones,
    "boneage_register_runtimes": hook_runtimes,
}


def all_hooks() -> set[str]:
    return {name for name, _ in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("boneage_")}


def test_every_hook_has_a_test() -> None:
    assert all_hooks() == set(HOOK_TESTS), "add a hook_* test for each hook in hookspecs.py"


def test_every_hook_is_documented() -> None:
    text = (ROOT / "docs" / "plugins.md").read_text()
    missing = [hook for hook in sorted(all_hooks()) if f"`{hook}`" not in text]
    assert not missing, f"hooks missing from docs/plugins.md: {missing}"


@pytest.mark.parametrize("hook", sorted(HOOK_TESTS))
def test_hook(hook: str, radiograph: np.ndarray, tiny_model: Path) -> None:
    HOOK_TESTS[hook](radiograph, tiny_model)


def test_builtins_register_through_the_hooks() -> None:
    manager = plugins.get_plugins()
    expected = {
        "preprocess_steps": {"grayscale", "invert", "hand_crop", "clahe", "resize", "normalize"},
        "croppers": {"classical", "mediapipe"},
        "backbones": {"densenet121", "resnet34_cbam"},
        "runtimes": {"onnx", "tensorflow"},
    }
    for kind, names in expected.items():
        items = manager.registry(kind)  # type: ignore[arg-type]
        assert names <= set(items) and all(items[n].source == plugins.BUILTIN for n in names)


def test_a_hook_that_raises_is_a_rejection() -> None:
    class Broken:
        @hookimpl
        def boneage_register_runtimes(self) -> list[RuntimeSpec]:
            raise RuntimeError("oops")

    with pytest.raises(PluginError) as raised:
        register(Broken(), "broken 0.0.1")
    assert str(raised.value) == "plugin Broken (broken 0.0.1): boneage_register_runtimes raised RuntimeError: oops"
    assert "onnx" in plugins.get_plugins().registry("runtimes")


def test_duplicate_name_names_both_sources() -> None:
    class Again:
        @hookimpl
        def boneage_register_runtimes(self) -> list[RuntimeSpec]:
            return [RuntimeSpec(name="onnx", load=lambda model, threads: ConstantRuntime())]

    with pytest.raises(PluginError) as raised:
        register(Again(), "impostor 0.1")
    assert str(raised.value) == "plugin Again (impostor 0.1): runtime 'onnx' is registered twice: " \
                                "by boneage.runtimes (built-in) and by Again (impostor 0.1)"
    assert plugins.get_plugins().registry("runtimes")["onnx"].source == plugins.BUILTIN


class FakeDist:
    name, version = "boneage-fake", "2.0"


class FakeEntryPoint:
    def __init__(self, name: str, target: Any) -> None:
        self.name, self.value, self.dist, self._target = name, f"fake:{name}", FakeDist(), target

    def load(self) -> Any:
        if isinstance(self._target, BaseException):
            raise self._target
        return self._target


def test_entry_points_load_and_failures_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    points = [FakeEntryPoint("broken", ImportError("no module named 'nothing'")), FakeEntryPoint("good", RuntimePlugin())]
    monkeypatch.setattr(plugins.importlib.metadata, "entry_points", lambda group: points if group == "boneage" else [])
    manager = plugins.Plugins(autoload=True)
    assert manager.registry("runtimes")["constant"].source == "boneage-fake 2.0"
    (failure,) = manager.failures
    assert failure.entry_point == "broken" and "no module named" in failure.error


def test_autoload_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins.importlib.metadata, "entry_points", lambda group: [FakeEntryPoint("good", RuntimePlugin())])
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "1")
    assert "constant" not in plugins.get_plugins().registry("runtimes")
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "0")
    plugins.reset_plugins()
    assert "constant" in plugins.get_plugins().registry("runtimes")


def test_import_boneage_is_light() -> None:
    code = "import boneage, sys; print(sorted(m for m in ('boneage.plugins', 'onnxruntime', 'cv2', 'tensorflow', 'keras') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


class UnbuildablePlugin:
    @hookimpl
    def boneage_register_preprocess_steps(self) -> list[StepSpec]:
        def build(params: object) -> Any:
            raise RuntimeError("needs a GPU it cannot find")

        return [StepSpec(name="unbuildable", build=build, params=FlipParams, doc="fails when built")]

    @hookimpl
    def boneage_register_runtimes(self) -> list[RuntimeSpec]:
        def load(model: object, threads: object) -> Any:
            raise OSError("no such accelerator")

        return [RuntimeSpec(name="unloadable", load=load, doc="fails when loaded")]


def test_a_plugin_that_cannot_build_or_load_is_a_plugin_error(tiny_model: Path) -> None:
    register(UnbuildablePlugin())
    with pytest.raises(PluginError, match="'unbuildable' could not be built: RuntimeError: needs a GPU"):
        build_pipeline(PreprocessConfig(steps=(StepConfig(name="unbuildable"),)))
    with pytest.raises(PluginError, match="runtime 'unloadable' could not load .*OSError: no such accelerator"):
        BoneAgeEstimator(tiny_model, runtime="unloadable")
