"""An unexported run's card is read from its config.json through boneage.configs.ModelConfig, so the
model registry needs no training code (issue 20, item 1). The card must say what TrainConfig says:
the same backbone, input size and resolved preprocessing, for every way a config can give them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from boneage.errors import InvalidModelError
from boneage.models import card_from_run
from boneage.training.config import TrainConfig

SOURCES = [{"labels": "labels.csv", "images": "images"}]
RESIZE_64 = {"steps": [{"name": "grayscale"}, {"name": "resize", "params": {"size": 64, "mode": "pad"}},
                       {"name": "normalize"}]}
RESIZE_NO_SIZE = {"steps": [{"name": "resize", "params": {"mode": "stretch"}}, {"name": "clahe"}]}


def run_folder(tmp_path: Path, config: dict[str, Any]) -> Path:
    """A run folder as training leaves it, with a best.keras whose bytes are never read here."""
    folder = tmp_path / "run-a"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "best.keras").write_bytes(b"PK")
    return folder / "best.keras"


CONFIGS = {
    "defaults": {},
    "input size only": {"input_size": 224},
    "size from the resize step": {"preprocessing": RESIZE_64},
    "resize without a size": {"input_size": 128, "preprocessing": RESIZE_NO_SIZE},
    "as training writes it": json.loads(TrainConfig(sources=SOURCES, backbone="tiny_cnn",
                                                    preprocessing=RESIZE_64).model_dump_json()),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_the_run_card_says_what_the_training_config_says(name: str, tmp_path: Path) -> None:
    config = {"sources": SOURCES, **CONFIGS[name]}
    card = card_from_run(run_folder(tmp_path, config))
    trained = TrainConfig.model_validate(config)
    assert (card.backbone, card.input_size) == (trained.backbone, trained.input_size)
    assert card.preprocessing == trained.resolved_preprocessing()
    assert card.name == "run:run-a"


def test_two_sizes_in_a_run_config_are_refused(tmp_path: Path) -> None:
    model = run_folder(tmp_path, {"sources": SOURCES, "input_size": 100, "preprocessing": RESIZE_64})
    with pytest.raises(InvalidModelError, match="not a valid run config.*resize step says size 64"):
        card_from_run(model)


def test_a_keras_model_without_its_run_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "best.keras").write_bytes(b"PK")
    with pytest.raises(InvalidModelError, match="needs the config.json of its run folder"):
        card_from_run(tmp_path / "best.keras")
