"""The recipes in recipes/ are valid training configs once data is given, and say what the campaign trains with."""

from __future__ import annotations

from pathlib import Path

import pytest

from boneage.training.config import load_config

RECIPES = sorted((Path(__file__).parents[1] / "recipes").glob("*.toml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_a_recipe_is_a_valid_config_with_data_given(recipe: Path, tmp_path: Path) -> None:
    config = load_config(recipe, {"sources": [{"labels": str(tmp_path / "labels.csv"), "images": str(tmp_path)}]})
    assert config.backbone and config.input_size


def test_the_densenet_recipe_is_the_campaigns() -> None:
    config = load_config(Path(__file__).parents[1] / "recipes" / "densenet121-100.toml",
                         {"sources": [{"labels": "labels.csv", "images": "."}]})
    resize = next(s for s in config.preprocessing.steps if s.name == "resize")
    clahe = next(s for s in config.preprocessing.steps if s.name == "clahe")
    assert resize.params["interpolation"] == "area" and clahe.params["tile_grid"] == 2
    assert resize.params["keep_float"] and clahe.params["keep_float"]  # no 8-bit rounding around CLAHE (issue 18)
    assert config.augment.before_preprocessing and config.augment.noise == 0.02
    assert (config.batch_size, config.precision, config.data_pipeline, config.jit_compile) == (64, "mixed_bfloat16", "arrays", False)
