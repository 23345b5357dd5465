"""Paired comparison of two models on the same images (boneage.metrics.paired_difference and
tools/compare_predictions.py): the release rule's measure (docs/experiments.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from boneage.metrics import paired_difference

TOOL = Path(__file__).parents[1] / "tools" / "compare_predictions.py"


def ages(n: int, noise_a: float, noise_b: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    true = rng.uniform(0, 220, n)
    return true, true + rng.normal(0, noise_a, n), true + rng.normal(0, noise_b, n)


def test_a_clearly_better_model_has_an_interval_wholly_below_zero() -> None:
    r = paired_difference(*ages(1000, 12, 9))
    assert r["mae_b"] < r["mae_a"]
    assert r["low"] <= r["difference"] <= r["high"] < 0
    assert r["difference"] == pytest.approx(r["mae_b"] - r["mae_a"])


def test_equal_models_on_few_images_straddle_zero_and_identical_ones_give_zero() -> None:
    true, a, b = ages(60, 10, 10, seed=3)
    r = paired_difference(true, a, b)
    assert r["low"] < 0 < r["high"]
    same = paired_difference(true, a, a)
    assert same["difference"] == same["low"] == same["high"] == 0 and same["b_closer"] == 0


def test_pairing_narrows_the_interval_when_errors_are_correlated() -> None:
    """Two models sharing most of their error differ by a well-known amount, though each MAE is uncertain."""
    rng = np.random.default_rng(5)
    true = rng.uniform(0, 220, 300)
    shared = rng.normal(0, 12, 300)
    r = paired_difference(true, true + shared, true + shared + rng.normal(0, 1, 300))
    assert r["high"] - r["low"] < 0.5


def test_a_seed_repeats_and_the_chunked_bootstrap_takes_any_count() -> None:
    data = ages(200, 10, 11)
    assert paired_difference(*data, resamples=2500) == paired_difference(*data, resamples=2500)
    assert paired_difference(*data, resamples=1)["n"] == 200


@pytest.mark.parametrize("bad", [dict(resamples=0), dict(level=1.0), dict(level=0.0)])
def test_bad_arguments_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        paired_difference(*ages(10, 1, 1), **bad)  # type: ignore[arg-type]


def test_arrays_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError):
        paired_difference([1.0, 2.0], [1.0, 2.0], [1.0])


def write(path: Path, rows: list[tuple[str, float, float]]) -> Path:
    path.write_text("id,boneage,male,predicted\n" + "".join(f"{i},{t},1,{p}\n" for i, t, p in rows))
    return path


def tool(*args: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), *map(str, args), "--resamples", "500"],
                          capture_output=True, text=True, timeout=120)


def test_the_tool_pairs_by_id_and_a_repeated_id_by_its_order(tmp_path: Path) -> None:
    a = write(tmp_path / "a.csv", [("1", 100, 110), ("2", 50, 40), ("1", 100, 120)])
    b = write(tmp_path / "b.csv", [("2", 50, 50), ("1", 100, 100), ("1", 100, 100)])
    done = tool(a, b)
    assert done.returncode == 0, done.stderr
    assert "3 images: MAE A 13.33, B 0.00; B - A -13.33 months" in done.stdout


@pytest.mark.parametrize("rows_b, message", [
    ([("1", 100, 100), ("3", 50, 50)], "different ids"),
    ([("1", 100, 100), ("2", 51, 50)], "same true age"),
])
def test_the_tool_refuses_files_over_different_images(tmp_path: Path, rows_b: list[tuple[str, float, float]],
                                                      message: str) -> None:
    a = write(tmp_path / "a.csv", [("1", 100, 110), ("2", 50, 40)])
    done = tool(a, write(tmp_path / "b.csv", rows_b))
    assert done.returncode == 2 and message in done.stderr


def test_the_tool_refuses_a_file_that_is_not_a_predictions_csv(tmp_path: Path) -> None:
    a = write(tmp_path / "a.csv", [("1", 100, 110), ("2", 50, 40)])
    other = tmp_path / "labels.csv"
    other.write_text("id,boneage,male\n1,100,1\n")
    done = tool(a, other)
    assert done.returncode == 2 and "is not a predictions.csv" in done.stderr and "Traceback" not in done.stderr


def test_nan_ages_are_refused_not_carried_into_every_figure(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="finite"):
        paired_difference([1.0, float("nan")], [1.0, 2.0], [1.0, 2.0])
    a = write(tmp_path / "a.csv", [("1", 100, 110), ("2", 50, float("nan"))])
    done = tool(a, write(tmp_path / "b.csv", [("1", 100, 100), ("2", 50, 50)]))
    assert done.returncode == 2 and "not a finite number" in done.stderr


def test_an_id_that_looks_like_a_repeat_is_not_taken_for_one(tmp_path: Path) -> None:
    a = write(tmp_path / "a.csv", [("1", 100, 110), ("1#2", 50, 40), ("1", 100, 120)])
    b = write(tmp_path / "b.csv", [("1", 100, 100), ("1#2", 50, 50), ("1", 100, 100)])
    done = tool(a, b)
    assert done.returncode == 0 and "3 images" in done.stdout, done.stderr
