"""Training on real radiographs (BONEAGE_DATA): it learns, it resumes, it never leaks ids."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from boneage.errors import ConfigError
from boneage.training.config import TrainConfig, load_config
from boneage.training.data import Record, is_validation, split

pytestmark = pytest.mark.tensorflow


def small_config(data_dir: Path, out: Path, **changes: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "backbone": "tiny_cnn",
        "input_size": 64,
        "sources": [{"labels": str(data_dir / "rsna-100/labels.csv"), "images": str(data_dir / "rsna-100")}],
        "limit": 256,
        "val_limit": 128,
        "batch_size": 32,
        "epochs": 3,
        "learning_rate": 3e-3,
        "warmup_epochs": 0.2,
        "augment": {"rotation_deg": 0, "shift": 0, "zoom": 0, "brightness": 0, "contrast": 0},
        "output_dir": str(out),
    }
    base.update(changes)
    return TrainConfig.model_validate(base)


def test_split_is_by_id_and_stable() -> None:
    records = [Record(str(i), Path(f"{i}.png"), 100.0, True) for i in range(2000)]
    twice = records + [Record(r.id, Path(f"big/{r.id}.png"), r.boneage, r.male) for r in records[::3]]
    train, val = split(twice, 0.1, 42)
    assert not {r.id for r in train} & {r.id for r in val}
    assert 0.07 < len({r.id for r in val}) / 2000 < 0.13
    assert [r.id for r in split(records, 0.1, 42)[1]] == [r.id for r in split(list(reversed(records)), 0.1, 42)[1]][::-1]
    # pinned: a run's validation ids must be the same in every process and on every Python (sha256, never hash())
    assert [i for i in map(str, range(1377, 1427)) if is_validation(i, 0.1, 42)] == ["1377", "1383", "1410"]
    assert all(is_validation(r.id, 0.2, 42) for r in val)  # a larger fraction only adds ids


def test_bad_labels_are_a_config_error(tmp_path: Path) -> None:
    from boneage.training.config import DataSource
    from boneage.training.data import read_source

    (tmp_path / "labels.csv").write_text("id,boneage,male\n1,100,yes\n")
    with pytest.raises(ConfigError, match="labels.csv:2"):
        read_source(DataSource(labels=tmp_path / "labels.csv", images=tmp_path))


def test_labels_without_an_image_are_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from boneage.training.config import DataSource
    from boneage.training.data import read_source

    (tmp_path / "labels.csv").write_text("id,boneage,male\n1,100,true\n2,120,false\n")
    (tmp_path / "1.png").write_bytes(b"")
    records = read_source(DataSource(labels=tmp_path / "labels.csv", images=tmp_path))
    assert [r.id for r in records] == ["1"] and "1 of the 2 ids" in caplog.text


def test_age_bands_cover_the_whole_range() -> None:
    from boneage.metrics import report

    ages = np.array([0.0, 24.0, 100.0, 228.0])
    bands = report(ages, ages + 1, np.array([True, False, True, False]))["by_age"]
    assert sum(b["n"] for b in bands.values()) == 4


def test_config_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('backbone = "resnet34_cbam"\nepochs = 4\n[[sources]]\nlabels = "l.csv"\nimages = "img"\n[augment]\nhflip = true\n')
    config = load_config(path, {"batch_size": 8, "augment.rotation_deg": 5})
    again = TrainConfig.model_validate_json(config.model_dump_json())
    assert again == config and again.batch_size == 8 and again.augment.hflip and again.augment.rotation_deg == 5
    (tmp_path / "c.json").write_text(config.model_dump_json())
    assert load_config(tmp_path / "c.json") == config
    yaml = pytest.importorskip("yaml", reason="PyYAML is in the train extra")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(json.loads(config.model_dump_json())))
    assert load_config(tmp_path / "c.yaml") == config


def test_invalid_config_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sources"):
        load_config(None, {"epochs": 2})
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(None, {"sources": [{"labels": "a", "images": "b"}], "batch_size": 0})
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.json")
    with pytest.raises(ConfigError, match="augment is a value"):
        load_config(None, {"augment": 1, "augment.hflip": True})
    if importlib.util.find_spec("yaml"):
        (tmp_path / "bad.yaml").write_text("epochs: [1,\n")
        with pytest.raises(ConfigError, match="cannot read config"):
            load_config(tmp_path / "bad.yaml")


def test_a_new_run_never_writes_into_a_used_folder(tmp_path: Path) -> None:
    from boneage.training.train import _begin_run, _check_run, train

    sources = [{"labels": str(tmp_path / "missing.csv"), "images": str(tmp_path)}]
    used = tmp_path / "used"
    used.mkdir()
    (used / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty"):
        train(TrainConfig.model_validate({"sources": sources, "output_dir": str(used)}))
    assert [f.name for f in used.iterdir()] == ["notes.txt"]
    fresh = TrainConfig.model_validate({"sources": sources, "output_dir": str(tmp_path / "fresh")})
    with pytest.raises(ConfigError, match="missing.csv"):
        train(fresh)  # bad data: refused before the run folder exists, so the fixed command can rerun
    assert not (tmp_path / "fresh").exists()
    # state.json exists from the start, so a run stopped inside its first epoch can be resumed
    _begin_run(fresh)
    assert _check_run(fresh, resume=True) == {"epoch": 0, "best_val_mae": None, "best_epoch": None, "wait": 0, "seconds": 0.0}


@pytest.fixture
def tiny_backbone() -> None:
    pytest.importorskip("keras", reason="needs Keras and TensorFlow (extra: train)")
    from tests import tiny_backbone

    tiny_backbone.register()


def val_predictions(run: Path, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    import keras

    from boneage.export.export import preprocessed
    from boneage.training.data import prepare_data

    _, val = prepare_data(config)
    images, male, ages = preprocessed(val, config)
    model = keras.saving.load_model(run / "best.keras", compile=False)
    return np.asarray(model({"image": images, "male": male}, training=False)).reshape(-1), ages


def test_training_beats_the_mean(data_dir: Path, tmp_path: Path, tiny_backbone: None) -> None:
    from boneage.training.data import prepare_data
    from boneage.training.train import train

    config = small_config(data_dir, tmp_path / "run", epochs=4, limit=1536, val_limit=128)
    run = train(config, verbose=0)
    for name in ("config.json", "data.json", "history.csv", "best.keras", "learning_curve.png", "state.json"):
        assert (run / name).is_file(), name
    train_records, _ = prepare_data(config)
    pred, ages = val_predictions(run, config)
    mean_mae = np.abs(ages - np.mean([r.boneage for r in train_records])).mean()
    model_mae = np.abs(pred - ages).mean()
    assert model_mae < 0.95 * mean_mae, f"model {model_mae:.1f} vs predict-the-mean {mean_mae:.1f} months"
    data = json.loads((run / "data.json").read_text())
    assert data["val_images"] == 128 and not set(data["val_id_list"]) & {r.id for r in train_records}
    (source,) = data["sources"]  # by name and checksum, never a local path
    assert source["name"] == "rsna-100" and len(source["pixels_sha256"]) == 64 and str(data_dir) not in str(source)


def test_unreadable_images_are_skipped_with_a_warning(data_dir: Path, tmp_path: Path, tiny_backbone: None,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    from boneage.training.train import train

    images = tmp_path / "images"
    images.mkdir()
    rows = (data_dir / "rsna-100/labels.csv").read_text().splitlines()[:97]
    (images / "labels.csv").write_text("\n".join(rows) + "\n")
    for row in rows[1:]:
        shutil.copy(data_dir / "rsna-100" / f"{row.split(',')[0]}.png", images)
    broken = images / f"{rows[1].split(',')[0]}.png"
    broken.write_bytes(broken.read_bytes()[:40])  # truncated
    sources = [{"labels": str(images / "labels.csv"), "images": str(images)}]
    run = train(small_config(data_dir, tmp_path / "run", sources=sources, epochs=1, limit=None, val_limit=None,
                             val_fraction=0.3), verbose=0)
    assert (run / "best.keras").is_file()
    assert f"skipped {broken}" in caplog.text


# Largest difference of any validation prediction, in months. With augmentation and dropout off
# a resumed run repeats the uninterrupted one (same data order, weights, optimizer state);
# with them on, it draws other random numbers after the resume: as good, not identical.
RESUME_TOLERANCE = 0.05


def test_resume_matches_uninterrupted(data_dir: Path, tmp_path: Path, tiny_backbone: None,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    from boneage.training.train import TrainingInterrupted, train

    changes = {"epochs": 2, "limit": 128, "val_limit": 64, "backbone_options": {"dropout": 0.0}}
    whole = train(small_config(data_dir, tmp_path / "whole", **changes), verbose=0)

    calls = {"n": 0}
    fit = keras.Model.fit

    def interrupted_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second epoch
        return fit(self, *args, **kwargs)

    config = small_config(data_dir, tmp_path / "split", **changes)
    monkeypatch.setattr(keras.Model, "fit", interrupted_fit)
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(config, verbose=0)
    monkeypatch.setattr(keras.Model, "fit", fit)
    with pytest.raises(ConfigError, match="--resume"):
        train(config, verbose=0)  # never silently overwrites a run
    run = config.output_dir
    killed = run / ".checkpoint.0123456789abcdef.tmp.keras"  # a save killed by SIGKILL left it
    killed.write_bytes(b"half a checkpoint")
    kept = run / ".checkpoint.notes.tmp.keras"  # not a name write_whole makes: not boneage's to remove
    kept.write_bytes(b"someone's")
    resumed = train(config, resume=True, verbose=0)

    assert json.loads((resumed / "state.json").read_text())["epoch"] == 2
    assert not killed.exists() and kept.read_bytes() == b"someone's"
    a, _ = val_predictions(whole, config)
    b, _ = val_predictions(resumed, config)
    assert np.abs(a - b).max() < RESUME_TOLERANCE


def test_fine_tuning_starts_from_the_given_weights(data_dir: Path, tmp_path: Path, tiny_backbone: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    from boneage.training.train import train

    changes = {"epochs": 1, "limit": 64, "val_limit": 32}
    first = train(small_config(data_dir, tmp_path / "first", **changes), verbose=0) / "best.keras"
    started: list[list[np.ndarray]] = []
    fit = keras.Model.fit

    def recording_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        started.append(self.get_weights())
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    train(small_config(data_dir, tmp_path / "tuned", init_weights=str(first), seed=1, **changes), verbose=0)
    expected = keras.saving.load_model(first, compile=False).get_weights()  # the test's own file
    assert all(np.array_equal(a, b) for a, b in zip(started[0], expected, strict=True))

    (tmp_path / "notes.keras").write_text("not a model")
    wrong = ((tmp_path / "absent.keras", "tiny_cnn", "no model file"),
             (tmp_path / "notes.keras", "tiny_cnn", "cannot start from"), (first, "densenet121", "cannot start from"))
    for init, backbone, message in wrong:
        config = small_config(data_dir, tmp_path / "wrong", init_weights=str(init), backbone=backbone,
                              **changes)
        with pytest.raises(ConfigError, match=message):
            train(config, verbose=0)
        assert not (tmp_path / "wrong").exists()  # nothing written for a bad start
