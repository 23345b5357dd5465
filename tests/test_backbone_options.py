"""backbone_options read from a file (a card's notes, a run's config.json, a training config) are bounded before
the backbone is built: {"head_units": 10**6} or a huge growth made Keras allocate gigabytes before any weight was
compared. Built-in backbones take only their own options, within bounds; plugins' take scalars within ±65,536."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from boneage.backbones import checked_options
from boneage.errors import ConfigError, InvalidModelError
from boneage.plugins import get_plugins
from boneage.specs import BackboneSpec
from tests.test_probe9_training import tiny
from tests.test_probe13_keras import SIZE, tiny_keras

BIG = [{"head_units": 10**6}, {"growth": 10**4}, {"sex_units": 10**6}, {"compression": 5.0}, {"dropout": True},
       {"l2": float("nan")}, {"width": 64}, {"head_units": [64]}, {"age_std": 0}]


@pytest.mark.parametrize("options", BIG)
def test_a_built_in_backbone_takes_only_its_options_within_bounds(options: dict[str, Any]) -> None:
    spec = get_plugins().get("backbones", "densenet121").spec
    with pytest.raises(InvalidModelError, match="densenet121 backbone cannot be built with these backbone_options"):
        checked_options(spec, options, InvalidModelError)
    good = {"growth": 12, "compression": 0.5, "head_units": 4096, "sex_units": 8, "dropout": 0.0, "l2": 1e-4,
            "age_mean": 127.0, "age_std": 41}
    assert checked_options(spec, good, ConfigError) == good


def test_resnet34_cbam_has_no_head_units_or_growth() -> None:
    spec = get_plugins().get("backbones", "resnet34_cbam").spec
    for options in ({"head_units": 64}, {"growth": 12}):
        with pytest.raises(ConfigError, match="is not one of its options"):
            checked_options(spec, options, ConfigError)


@pytest.mark.parametrize("options", [{"units": 10**6}, {"units": -(10**6)}, {"units": [1, 2]}, {"units": {"a": 1}},
                                     {"rate": float("inf")}, {"name": "x" * 201}, "units", {1: 2}])
def test_a_plugin_backbone_takes_scalars_within_a_generous_bound(options: Any) -> None:
    calls: list[Any] = []
    spec = BackboneSpec(name="plugged", build=lambda size, **o: calls.append(o), default_input_size=32, doc="")
    with pytest.raises(InvalidModelError, match="plugged backbone"):
        checked_options(spec, options, InvalidModelError)
    ok = {"units": 65_536, "rate": 0.5, "flag": True, "name": "x", "none": None}
    assert checked_options(spec, ok, InvalidModelError) == ok and not calls


@pytest.fixture
def no_densenet(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """A spy standing for the DenseNet builder: the options must be refused before it is called."""
    pytest.importorskip("tensorflow", reason="needs TensorFlow (extra: train)")
    from boneage.backbones import densenet

    calls: list[Any] = []
    monkeypatch.setattr(densenet, "build_densenet121", lambda *a, **k: calls.append(k))
    return calls


@pytest.mark.tensorflow
@pytest.mark.parametrize("options", [{"head_units": 10**6}, {"growth": 10**4}])
def test_a_card_or_run_config_asking_for_a_huge_backbone_is_refused_unbuilt(tmp_path: Path, no_densenet: list[Any],
                                                                           options: dict[str, Any]) -> None:
    from boneage.models import card_from_run
    from boneage.runtimes.tensorflow import TensorFlowRuntime
    from boneage.training.train import load_saved
    from tests import tiny_backbone
    from tests.helpers import tiny_card

    tiny_backbone.register()
    path = tmp_path / "run" / "best.keras"
    tiny_keras(path)  # a valid archive: the options are refused when the backbone is built for it
    card = tiny_card(SIZE).model_copy(update={"backbone": "densenet121", "notes": {"backbone_options": options}})
    with pytest.raises(InvalidModelError, match="densenet121 backbone.*backbone_options.*(4096|128)"):
        TensorFlowRuntime(path.with_suffix(".onnx"), card)
    (path.parent / "config.json").write_text(json.dumps({"backbone": "densenet121", "input_size": SIZE,
                                                         "backbone_options": options}))
    with pytest.raises(InvalidModelError, match="backbone_options"):
        TensorFlowRuntime(path.with_suffix(".onnx"), card_from_run(path))
    with pytest.raises(ConfigError, match="backbone_options"):
        load_saved(path, "cannot start from it")
    assert not no_densenet


@pytest.mark.tensorflow
def test_a_training_config_asking_for_a_huge_backbone_is_a_config_error_unbuilt(tmp_path: Path,
                                                                                no_densenet: list[Any]) -> None:
    from boneage.training.data import Record
    from boneage.training.train import build_and_compile

    records = [Record(str(i), Path(f"{i}.png"), 100.0 + i, bool(i % 2)) for i in range(4)]
    config = tiny(tmp_path / "run", backbone="densenet121", backbone_options={"head_units": 10**6})
    with pytest.raises(ConfigError, match="densenet121 backbone.*head_units"):
        build_and_compile(config, records, steps_per_epoch=1)
    assert not no_densenet and not (tmp_path / "run").exists()
