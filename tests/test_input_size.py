"""One input size: a config that names two is refused when it is made, and the pipeline's output
is checked against the model's input once, when a model is loaded or exported (issue 20, item 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from boneage import BoneAgeEstimator
from boneage.errors import ConfigError, InvalidModelError
from boneage.preprocess import PreprocessConfig, StepConfig
from boneage.training.config import TrainConfig, load_config
from tests.helpers import tiny_card, write_tiny_model

SOURCES = [{"labels": "labels.csv", "images": "images"}]


def resize_to(size: int | None) -> PreprocessConfig:
    params = {"mode": "pad"} if size is None else {"size": size, "mode": "pad"}
    return PreprocessConfig(steps=(StepConfig(name="grayscale"), StepConfig(name="resize", params=params),
                                   StepConfig(name="normalize")))


def test_with_size_refuses_to_replace_a_size_the_user_gave() -> None:
    with pytest.raises(ConfigError, match="the resize step says size 224, but the input size is 100"):
        resize_to(224).with_size(100)
    assert resize_to(224).with_size(224).input_size == 224
    assert resize_to(None).with_size(100).input_size == 100  # a resize without a size takes the input size


def test_train_config_with_two_sizes_is_refused_when_made(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="resize step says size 224"):
        TrainConfig(sources=SOURCES, input_size=100, preprocessing=resize_to(224))
    path = tmp_path / "config.json"
    path.write_text(TrainConfig(sources=SOURCES, preprocessing=resize_to(224)).model_dump_json())
    with pytest.raises(ConfigError, match="resize step says size 224, but the input size is 100"):
        load_config(path, {"input_size": 100})


def test_the_resize_step_sets_the_input_size_when_none_is_given() -> None:
    config = TrainConfig(sources=SOURCES, preprocessing=resize_to(224))
    assert config.input_size == 224 and config.resolved_preprocessing().input_size == 224  # was 100
    assert TrainConfig(sources=SOURCES, input_size=64).resolved_preprocessing() == PreprocessConfig.default(64)
    assert TrainConfig(sources=SOURCES, input_size=64, preprocessing=resize_to(None)).resolved_preprocessing() \
        == resize_to(64)
    with pytest.raises(ValidationError, match="from 32 to 1024"):
        TrainConfig(sources=SOURCES, preprocessing=resize_to(2000))


def test_a_pipeline_the_model_cannot_take_is_refused_at_load(tmp_path: Path, models_dir: Path) -> None:
    """No resize step: the card is valid, but the images would keep their own size. It failed on
    every image; now the model is refused when it is loaded."""
    no_resize = PreprocessConfig(steps=(StepConfig(name="grayscale"), StepConfig(name="normalize")))
    path = write_tiny_model(tmp_path / "odd.onnx", card=tiny_card(64, preprocessing=no_resize))
    with pytest.raises(InvalidModelError, match=r"the preprocessing gives \(320, 256, 1\) .* not \(64, 64, 1\)"):
        BoneAgeEstimator(path)


def test_export_checks_the_model_input_against_the_run(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow", reason="needs TensorFlow (extra: train)")
    from boneage.errors import ExportError
    from boneage.export.export import check_shapes
    from tests import tiny_backbone

    model = tiny_backbone.build(32)
    check_shapes(model, TrainConfig(sources=SOURCES, input_size=32), tmp_path / "best.keras")
    with pytest.raises(ExportError, match=r"takes images of shape \(32, 32, 1\), but the run's input size is 64"):
        check_shapes(model, TrainConfig(sources=SOURCES, input_size=64), tmp_path / "best.keras")
