"""Probe 15's leftovers of finding 5: counts in a training config and a cropper's working size had no upper
bound, so a 401-digit value (valid JSON, TOML and YAML) overflowed later: the schedule's step count (exit 70),
or the cropper's downscale on every image. They are refused where the config or the card is read."""

from __future__ import annotations

from pathlib import Path

import pytest

from boneage.errors import BoneAgeError, ConfigError
from boneage.preprocess import PreprocessConfig, build_pipeline
from boneage.preprocess.config import StepConfig
from boneage.training.config import load_config

BIG = 10**400
SOURCE = {"sources": [{"labels": "labels.csv", "images": "images"}]}


@pytest.mark.parametrize("key", ["epochs", "steps_per_epoch", "limit", "val_limit", "patience"])
def test_a_count_past_any_real_run_is_a_config_error(key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_config(None, {**SOURCE, key: BIG})
    assert getattr(load_config(None, {**SOURCE, key: 100}), key) == 100  # a real value still reads


@pytest.mark.parametrize("cropper", ["classical", "mediapipe"])
def test_a_cards_cropper_working_size_is_bounded_when_the_pipeline_is_built(cropper: str) -> None:
    def pipeline(work_size: int) -> object:
        step = StepConfig(name="hand_crop", params={"cropper": cropper, "options": {"work_size": work_size}})
        return build_pipeline(PreprocessConfig(steps=(StepConfig(name="grayscale"), step)))

    with pytest.raises(BoneAgeError, match="work_size"):
        pipeline(BIG)
    pipeline(512)


def test_a_card_whose_steps_cannot_be_built_is_a_model_error(tmp_path: Path) -> None:
    """A step parameter out of bounds in a model's card was a ConfigError (exit 2, "your input") at load."""
    pytest.importorskip("onnx")
    from boneage import BoneAgeEstimator
    from boneage.errors import InvalidModelError
    from tests.helpers import tiny_card
    from tests.test_probe13_cards import SIZE, sealed

    card = tiny_card(SIZE).model_dump(mode="json")
    card["preprocessing"]["steps"].insert(1, {"name": "hand_crop", "params": {"options": {"work_size": BIG}}})
    with pytest.raises(InvalidModelError, match="its preprocessing cannot be built: .*work_size"):
        BoneAgeEstimator(str(sealed(tmp_path / "m.onnx", card=card)))
