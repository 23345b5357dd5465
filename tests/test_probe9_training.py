"""What the ninth outside probe (issue 19) found in training, one test each."""

from __future__ import annotations

import json
import logging
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from boneage.errors import ConfigError, TrainingInterrupted
from boneage.training.config import TrainConfig
from boneage.training.data import Record

pytestmark = pytest.mark.tensorflow

MISSING = {"labels": "missing/labels.csv", "images": "missing"}


def tiny(out: Path, data_dir: Path | None = None, **changes: Any) -> TrainConfig:
    """The smallest run there is: 16 training and 8 validation images of 32 px, one epoch of two batches."""
    sources = [{"labels": str(data_dir / "rsna-100/labels.csv"), "images": str(data_dir / "rsna-100")}] \
        if data_dir else [MISSING]
    base: dict[str, Any] = {"backbone": "tiny_cnn", "input_size": 32, "sources": sources, "limit": 16, "val_limit": 8,
                            "batch_size": 8, "epochs": 1, "checkpoint_minutes": 0, "output_dir": str(out),
                            "augment": {"rotation_deg": 0, "shift": 0, "zoom": 0, "brightness": 0, "contrast": 0}}
    return TrainConfig.model_validate(base | changes)


def register_tiny() -> None:
    pytest.importorskip("keras", reason="needs Keras and TensorFlow (extra: train)")
    from tests import tiny_backbone

    tiny_backbone.register()


@pytest.fixture
def tiny_backbone() -> None:
    register_tiny()


@pytest.fixture(scope="module")
def finished_run(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One finished one-epoch run of the tiny backbone, copied by each test that damages it."""
    from boneage import plugins
    from boneage.training.train import train

    register_tiny()
    run = train(tiny(tmp_path_factory.mktemp("probe9") / "run0", data_dir), verbose=0)
    plugins.reset_plugins()
    yield run


def copy_run(run: Path, to: Path) -> tuple[Path, TrainConfig]:
    """A copy of ``run`` and its config, pointed at the copy."""
    shutil.copytree(run, to)
    config = TrainConfig.model_validate_json((to / "config.json").read_text())
    return to, config.model_copy(update={"output_dir": to})


def strict_json(path: Path) -> Any:
    """JSON as strict parsers read it: NaN and Infinity are not JSON."""
    def refuse(token: str) -> None:
        raise ValueError(f"{token} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


STATE = {"epoch": 0, "best_val_mae": None, "best_epoch": None, "wait": 0, "seconds": 0.0}


@pytest.mark.parametrize("text", [
    "{not json", "[1, 2]", "{}", '{"epoch": "0", "best_val_mae": null, "best_epoch": null, "wait": 0, "seconds": 0}',
    json.dumps(STATE | {"epoch": -1}), json.dumps(STATE | {"epoch": 1.5}), json.dumps(STATE | {"batch": -3}),
    json.dumps(STATE | {"wait": True}), json.dumps(STATE | {"seconds": float("nan")}),
    json.dumps(STATE | {"seconds": -1}), json.dumps(STATE | {"best_val_mae": float("inf"), "best_epoch": 1}),
    json.dumps(STATE | {"best_val_mae": 3.5}),  # a best without its epoch
])
def test_a_damaged_state_is_a_config_error_before_any_work(tmp_path: Path, text: str) -> None:
    # train --resume read state.json with json.loads and no check: JSONDecodeError, TypeError (a list,
    # "epoch": "0"), KeyError ({}), all internal errors (exit 70), the last two after data and model had loaded
    pytest.importorskip("keras", reason="needs the train extra")
    from boneage.training.train import train

    run = tmp_path / "run"
    run.mkdir()
    (run / "state.json").write_text(text)
    with pytest.raises(ConfigError, match="state.json is not a run's state"):
        train(tiny(run), resume=True)  # the data (missing) is never read: the state is checked first
    assert (run / "state.json").read_text() == text


def test_a_truncated_checkpoint_is_a_config_error_naming_it(finished_run: Path, tmp_path: Path,
                                                            tiny_backbone: None) -> None:
    # a checkpoint.keras cut to 1000 bytes was "internal error: ValueError: File not found" (exit 70)
    from boneage.training.train import train

    run, config = copy_run(finished_run, tmp_path / "run")
    with (run / "checkpoint.keras").open("r+b") as f:
        f.truncate(1000)
    (run / "state.json").write_text(json.dumps(STATE))
    with pytest.raises(ConfigError, match="checkpoint.keras cannot be loaded") as caught:
        train(config, resume=True, verbose=0)
    assert "File not found" not in str(caught.value)


def test_an_unreadable_history_is_a_warning_and_never_hides_the_error_in_flight(
        finished_run: Path, tmp_path: Path, tiny_backbone: None, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # plot_history ran in train()'s finally: a history.csv that did not parse ended every train or resume of the
    # run with "internal error: ValueError" (exit 70), and replaced the exception in flight (Ctrl-C: 130 became 70)
    import keras

    from boneage.training.train import train

    run, config = copy_run(finished_run, tmp_path / "run")
    (run / "history.csv").write_text("epoch,loss,mae,rmse,val_loss,val_mae,val_rmse\nzero,1,abc,1,1,1,1\n")
    with caplog.at_level(logging.WARNING):
        assert train(config, resume=True, verbose=0) == run  # finished: nothing to train, only the chart
    assert "learning_curve.png" in caplog.text and "history.csv" in caplog.text

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(keras.Model, "fit", interrupted)
    with pytest.raises(TrainingInterrupted):
        train(config.model_copy(update={"epochs": 2}), resume=True, verbose=0)


def test_a_saved_batch_past_the_epochs_steps_starts_the_epoch_over(
        finished_run: Path, tmp_path: Path, tiny_backbone: None, caplog: pytest.LogCaptureFixture) -> None:
    # "batch": 999999 (or a run stopped inside an epoch and resumed with a larger batch size) skipped every batch:
    # a zero-step epoch wrote its validation values under the training columns of history.csv, then TypeError
    # (exit 70), with state.json already counting the epoch
    import csv

    from boneage.training.train import train

    run, config = copy_run(finished_run, tmp_path / "run")
    (run / "history.csv").unlink()
    (run / "state.json").write_text(json.dumps(STATE | {"batch": 999_999}))
    with caplog.at_level(logging.WARNING):
        train(config, resume=True, verbose=0)
    assert "starts over" in caplog.text
    with (run / "history.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    assert row["epoch"] == "0" and all(value not in (None, "") for value in row.values()), row
    state = strict_json(run / "state.json")
    assert state["epoch"] == 1 and state["batch"] == 0


@pytest.mark.parametrize(("key", "value"), [
    ("warmup_epochs", "Infinity"), ("warmup_epochs", 1e308), ("learning_rate", "Infinity"),
    ("learning_rate", "NaN"), ("huber_delta", "Infinity"), ("weight_decay", "Infinity"),
    ("checkpoint_minutes", "Infinity"), ("time_limit", "Infinity"), ("time_limit", 1e300),
])
def test_infinite_or_huge_floats_are_refused_by_the_config(key: str, value: Any) -> None:
    # --set warmup_epochs=Infinity (or 1e308) was an OverflowError once the model was built; learning_rate=Infinity
    # was accepted and written to config.json as null, so the run could never be resumed
    from boneage.cli.main import parser
    from boneage.cli.train import overrides
    from boneage.training.config import load_config

    args = parser().parse_args(["train", "--set", f"{key}={json.dumps(value) if isinstance(value, float) else value}"])
    with pytest.raises(ConfigError, match=key):
        load_config(None, {"sources": [MISSING], **{k: v for k, v in overrides(args).items() if v is not None}})


def test_a_time_limit_past_floats_is_refused() -> None:
    # duration() of a 400-digit number was inf: accepted, and with --fit-epochs-to-time a NaN error after an epoch
    from boneage.cli.train import duration

    with pytest.raises(ConfigError, match="time-limit"):
        duration("9" * 400 + "s")
    assert duration("2h25m") == 8700


def test_a_diverging_run_stops_with_an_error_and_saves_no_best(data_dir: Path, tmp_path: Path,
                                                               tiny_backbone: None) -> None:
    # learning_rate=1e300 trained to NaN and exited 0 with "best model", state.json held a bare NaN (not JSON),
    # and no later epoch could replace a NaN best (nothing compares below NaN)
    from boneage.training.train import train

    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="diverged.*learning_rate"):
        train(tiny(run, data_dir, learning_rate=1e300, warmup_epochs=0), verbose=0)
    assert not (run / "best.keras").exists()
    state = strict_json(run / "state.json")
    assert state["epoch"] == 0 and state["best_val_mae"] is None


def build_tiny(options: dict[str, Any], out: Path) -> Any:
    from boneage.training.train import build_and_compile

    records = [Record(str(i), Path(f"{i}.png"), 100.0 + i, bool(i % 2)) for i in range(4)]
    return build_and_compile(tiny(out, backbone_options=options), records, steps_per_epoch=1)


@pytest.mark.parametrize("options", [{"foo": 1}, {"dropout": 5}, {"age_mean": "x"}, {"age_std": 0},
                                     {"head_units": 0}, {"l2": float("nan")}])
def test_bad_backbone_options_are_a_config_error_naming_the_backbone(tmp_path: Path, tiny_backbone: None,
                                                                     options: dict[str, Any]) -> None:
    # backbone_options went to the builder unchecked: {"foo": 1} TypeError, {"dropout": 5} ValueError (exit 70);
    # {"age_mean": "x"} built and failed at the first step, a TensorFlow error, after the run folder was written
    with pytest.raises(ConfigError, match="tiny_cnn.*backbone_options"):
        build_tiny(options, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_bad_backbone_options_leave_no_run_folder(data_dir: Path, tmp_path: Path, tiny_backbone: None) -> None:
    from boneage.training.train import train

    with pytest.raises(ConfigError, match="backbone_options"):
        train(tiny(tmp_path / "run", data_dir, backbone_options={"age_mean": "x"}), verbose=0)
    assert not (tmp_path / "run").exists()


def test_init_weights_that_do_not_load_are_a_config_error_with_the_reason(tmp_path: Path,
                                                                          tiny_backbone: None) -> None:
    # a .keras zip without config.json was a KeyError, one naming a Lambda layer a TypeError (exit 70);
    # text, empty and truncated files were typed but said "File not found" of a file that is there
    from boneage.training.train import warm_start

    config = tiny(tmp_path / "run")
    model = build_tiny({}, tmp_path / "run")
    good = tmp_path / "good.keras"
    model.save(good)
    files = {"text.keras": b"not a model", "empty.keras": b"", "cut.keras": good.read_bytes()[:1000]}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    with zipfile.ZipFile(tmp_path / "nocfg.keras", "w") as z:
        z.writestr("foo.txt", "x")
    with zipfile.ZipFile(tmp_path / "lambda.keras", "w") as z:
        z.writestr("config.json", '{"class_name": "Lambda", "config": {}}')
        z.writestr("metadata.json", "{}")
    for name in [*files, "nocfg.keras", "lambda.keras"]:
        with pytest.raises(ConfigError, match="cannot start from") as caught:
            warm_start(model, tmp_path / name, config)
        assert "File not found" not in str(caught.value), caught.value
    before = [w.copy() for w in model.get_weights()]
    warm_start(model, good, config)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
