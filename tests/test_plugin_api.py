"""The plugin API can evolve: keyword-only specs, a declared API version checked at registration,
providers recorded in the model card, a public ``build_model``, and ``boneage plugins`` listing
each plugin with its hooks (issue 20, item 2)."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from boneage import BoneAgeEstimator, hookimpl, plugins
from boneage.cli.main import main
from boneage.errors import PluginError
from boneage.modelcard import Provider, read_card
from boneage.preprocess import PreprocessConfig, StepConfig
from boneage.specs import API_VERSION, BackboneSpec, CropperSpec, ReferenceSpec, RuntimeSpec, StepSpec
from tests.helpers import tiny_card, write_tiny_model
from tests.test_plugins import ConstantRuntime, FakeEntryPoint, FlipParams


def flip(params: Any) -> Any:
    return lambda image, trace: np.flip(image, 1)


def module_plugin(api: object = None, version: str = "3.1.4") -> types.ModuleType:
    """A plugin module as a package ships one: a step and a runtime, a version, perhaps an API."""
    module = types.ModuleType("boneage_flip")
    module.__version__ = version  # type: ignore[attr-defined]
    if api is not None:
        module.BONEAGE_API_VERSION = api  # type: ignore[attr-defined]
    module.boneage_register_preprocess_steps = hookimpl(  # type: ignore[attr-defined]
        lambda: [StepSpec(name="flip", build=flip, params=FlipParams, doc="mirror")])
    module.boneage_register_runtimes = hookimpl(  # type: ignore[attr-defined]
        lambda: [RuntimeSpec(name="constant", load=lambda model, threads: ConstantRuntime())])
    return module


@pytest.mark.parametrize("spec", [StepSpec, CropperSpec, BackboneSpec, RuntimeSpec, ReferenceSpec])
def test_specs_take_keywords_only(spec: type) -> None:
    with pytest.raises(TypeError, match="positional"):
        spec("name", flip)


@pytest.mark.parametrize("api", [None, API_VERSION, "1.0", "1.1"])
def test_a_plugin_of_this_api_registers(api: object) -> None:
    manager = plugins.get_plugins()
    manager.register(module_plugin(api), "boneage-flip 3.1.4")
    assert manager.registry("preprocess_steps")["flip"].version == "3.1.4"
    (info,) = [i for i in manager.describe() if i.name == "boneage_flip"]
    assert info.api_version == api and info.version == "3.1.4"


REFUSED = {
    "2.0": f"written for boneage plugin API 2.0, but this boneage implements {API_VERSION} (another major version): "
           "install a release of the plugin made for API 1.x",
    "1.7": f"needs boneage plugin API 1.7, newer than this boneage's {API_VERSION}: upgrade boneage",
    "one": f"BONEAGE_API_VERSION must be 'MAJOR.MINOR' (e.g. {API_VERSION!r}), not 'one'",
    "1": f"BONEAGE_API_VERSION must be 'MAJOR.MINOR' (e.g. {API_VERSION!r}), not '1'",
    1.0: f"BONEAGE_API_VERSION must be 'MAJOR.MINOR' (e.g. {API_VERSION!r}), not 1.0",
}


@pytest.mark.parametrize("api", list(REFUSED), ids=repr)
def test_another_api_is_refused_at_registration_naming_the_plugin(api: object) -> None:
    manager = plugins.get_plugins()
    with pytest.raises(PluginError) as raised:
        manager.register(module_plugin(api), "boneage-flip 3.1.4")
    assert str(raised.value) == f"plugin boneage_flip (boneage-flip 3.1.4): {REFUSED[api]}"
    assert "flip" not in manager.registry("preprocess_steps") and not manager.pm.has_plugin("boneage_flip")


def test_an_installed_plugin_of_another_api_is_listed_as_rejected(monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(plugins.importlib.metadata, "entry_points", lambda group: [FakeEntryPoint("flip", module_plugin("2.0"))])
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "0")
    plugins.reset_plugins()
    assert main(["plugins"]) == 1
    out = capsys.readouterr().out
    assert f"rejected: boneage-fake 2.0:flip (boneage-fake 2.0): {REFUSED['2.0']}" in out


def test_plugins_lists_each_plugin_with_its_version_and_hooks(monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(plugins.importlib.metadata, "entry_points", lambda group: [FakeEntryPoint("flip", module_plugin("1.0"))])
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "0")
    plugins.reset_plugins()
    assert main(["plugins"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["plugin", "version", "api", "source", "hooks"]
    (row,) = [line for line in lines if line.startswith("boneage-fake 2.0:flip ")]
    # name, the distribution's version, the declared API, source, hooks
    assert row.split()[2:] == ["2.0", "1.0", "boneage-fake", "2.0", "preprocess_steps,", "runtimes"]
    (builtin,) = [line for line in lines if line.startswith("boneage.runtimes ")]
    assert builtin.split()[-2:] == ["built-in", "runtimes"] and f" {API_VERSION} " in builtin
    assert any(line.split()[:2] == ["preprocess_steps", "flip"] for line in lines)  # the items follow


def test_the_card_records_each_steps_provider() -> None:
    from boneage.export.export import providers

    plugins.get_plugins().register(module_plugin("1.0"), "boneage-flip 3.1.4")
    config = PreprocessConfig(steps=(StepConfig(name="grayscale"), StepConfig(name="hand_crop"),
                                     StepConfig(name="flip"), StepConfig(name="resize", params={"size": 64}),
                                     StepConfig(name="normalize")))
    found = providers(config)
    assert [(p.kind, p.name) for p in found] == [("preprocess_step", "grayscale"), ("preprocess_step", "hand_crop"),
                                                ("cropper", "classical"), ("preprocess_step", "flip"),
                                                ("preprocess_step", "resize"), ("preprocess_step", "normalize")]
    assert found[3] == Provider(kind="preprocess_step", name="flip", plugin="boneage_flip", source="boneage-flip 3.1.4",
                                version="3.1.4")
    assert found[0].source == plugins.BUILTIN and found[0].plugin == "boneage.preprocess.builtin" and found[0].version


def test_cards_with_and_without_providers_load(tmp_path: Path, models_dir: Path) -> None:
    old = write_tiny_model(tmp_path / "old.onnx", card=tiny_card(schema_version="1.0"))  # before providers
    assert BoneAgeEstimator(old).card.providers == []
    provider = Provider(kind="preprocess_step", name="resize", plugin="boneage.preprocess.builtin", source="built-in",
                        version="0.1.0")
    new = write_tiny_model(tmp_path / "new.onnx", card=tiny_card(providers=[provider]))
    card = read_card(new.read_bytes(), "new.onnx")
    assert card.schema_version == "1.1" and card.providers == [provider]
    assert BoneAgeEstimator(new).card.providers == [provider]


def test_build_model_is_public_for_backbone_plugins() -> None:
    keras = pytest.importorskip("keras")
    from boneage.backbones import build_model

    model = build_model("pooled", 32, lambda image: keras.layers.GlobalAveragePooling2D()(image), head_units=8)
    assert sorted(t.name for t in model.inputs) == ["image", "male"] and model.name == "pooled"
    out = np.asarray(model({"image": np.zeros((2, 32, 32, 1), np.float32), "male": np.ones((2, 1), np.float32)}))
    assert out.shape == (2, 1) and np.allclose(out, 127.0, atol=60)
