"""Export a trained model, then serve it as a user would: both runtimes, checksums, int8, evaluate."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from boneage import BoneAgeEstimator
from boneage.errors import ChecksumMismatchError, ConfigError, InvalidModelError
from boneage.modelcard import read_card
from boneage.models import load_registry

pytest.importorskip("tf2onnx", reason="needs TensorFlow and tf2onnx (extra: train)")
pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def exported(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from boneage import plugins
    from boneage.export.export import export_run
    from boneage.training.train import train
    from tests import tiny_backbone
    from tests.test_training import small_config

    root = tmp_path_factory.mktemp("export")
    plugins.reset_plugins()
    tiny_backbone.register()
    run = train(small_config(data_dir, root / "run", epochs=1, limit=128, val_limit=48), verbose=0)
    plugins.reset_plugins()
    tiny_backbone.register()  # export builds the run's backbone and reads the run's weights into it
    export_run(run, "0.1.0", root / "models", quantize="int8")
    return root / "models"


@pytest.fixture
def models(exported: Path, monkeypatch: pytest.MonkeyPatch, tiny: None) -> Path:
    monkeypatch.setenv("BONEAGE_MODELS_DIR", str(exported))
    return exported


@pytest.fixture
def tiny() -> None:
    """The run's backbone: export and the TensorFlow runtime build it, then read the run's weights into it."""
    from boneage import plugins
    from tests import tiny_backbone

    if "tiny_cnn" not in plugins.get_plugins().registry("backbones"):
        tiny_backbone.register()


def val_images(models: Path, data_dir: Path, n: int = 6) -> list[Path]:
    ids = sorted(json.loads((models.parent / "run" / "data.json").read_text())["val_id_list"])[:n]
    return [data_dir / "rsna-100" / f"{i}.png" for i in ids]


def checkout_commit() -> str:
    """What export must record: the commit of the checkout it runs in, or "" outside one."""
    out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True) if shutil.which("git") else None
    return out.stdout.strip() if out is not None and out.returncode == 0 else ""


def test_registry_card_and_files(models: Path) -> None:
    registry = load_registry(models)
    assert registry.default == "boneage-tiny_cnn-0.1.0"
    fp32, int8 = registry.models
    assert (fp32.file, int8.file) == ("boneage-tiny_cnn-0.1.0.onnx", "boneage-tiny_cnn-int8-0.1.0.onnx")
    assert int8.ref == "boneage-tiny_cnn-int8-0.1.0" and not int8.keras_file
    assert int8.quantized == "int8" and (models / fp32.keras_file).is_file()
    card = read_card((models / fp32.file).read_bytes(), fp32.file)
    assert card.backbone == "tiny_cnn" and card.input_size == 64 and card.output_unit == "months"
    assert card.preprocessing.input_size == 64 and card.training_data.train_images == 128
    assert card.training_data.sources == ["rsna-100"] and "/" not in card.training_data.model_dump_json()
    assert card.metrics["validation"]["parity_max_abs_months"] <= 0.05
    assert card.interval is not None and card.interval.level == 0.9 and card.interval.bands  # calibrated at export
    assert card.interval.coverage["cross_validated"]["n"] == card.interval.coverage["n"] == 48
    int8_card = read_card((models / int8.file).read_bytes(), int8.file)
    assert int8_card.interval is not None and int8_card.interval != card.interval  # its own errors
    assert card.git_commit == checkout_commit() and card.created and "non-commercial" in card.licence
    assert [(p.name, p.source) for p in card.providers] == [(s.name, "built-in") for s in card.preprocessing.steps]
    assert type(card).model_validate_json(card.model_dump_json()) == card


def test_onnx_and_tensorflow_runtimes_agree(models: Path, data_dir: Path) -> None:
    images = val_images(models, data_dir)
    onnx = BoneAgeEstimator(runtime="onnx").predict_batch(images, [True, False] * 3)
    tf = BoneAgeEstimator(runtime="tensorflow").predict_batch(images, [True, False] * 3)
    diffs = [abs(a.bone_age_months - b.bone_age_months) for a, b in zip(onnx, tf, strict=False)]
    assert max(diffs) <= 0.05 and {p.runtime for p in tf} == {"tensorflow"}


def test_int8_runs_within_its_recorded_error(models: Path, data_dir: Path) -> None:
    entry = load_registry(models).models[1]
    card = read_card((models / entry.file).read_bytes(), entry.file)
    change = card.metrics["validation"]["mae_change_vs_fp32"]
    assert entry.recommended == (change <= 0.5)
    quantization = card.notes["quantization"]
    assert quantization["calibration_data"] == "training split" and len(quantization["float_nodes"]) == 1
    assert np.isfinite(quantization["bias_correction_months"])  # the output less int8's mean shift from fp32
    images = val_images(models, data_dir)
    fp32 = [p.bone_age_months for p in BoneAgeEstimator().predict_batch(images, [True] * 6)]
    quantized = BoneAgeEstimator(entry.ref)
    assert quantized.path.name == entry.file
    int8 = [p.bone_age_months for p in quantized.predict_batch(images, [True] * 6)]
    assert np.all(np.isfinite(int8)) and max(abs(a - b) for a, b in zip(fp32, int8, strict=False)) < 10.0


def test_tampered_copy_refused(models: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.onnx"
    data = bytearray((models / "boneage-tiny_cnn-0.1.0.onnx").read_bytes())
    data[len(data) // 3] ^= 0x01
    copy.write_bytes(bytes(data))
    with pytest.raises((ChecksumMismatchError, InvalidModelError)):
        BoneAgeEstimator(copy)
    shutil.copy(models / "boneage-tiny_cnn-0.1.0.onnx", tmp_path / "ok.onnx")
    assert BoneAgeEstimator(tmp_path / "ok.onnx").card.version == "0.1.0"  # an intact copy outside the registry


def test_export_never_overwrites(models: Path, exported: Path) -> None:
    from boneage.export.export import ExportError, export_run

    run = exported.parent / "run"
    with pytest.raises(ExportError, match="bump --version"):
        export_run(run, "0.1.0", exported)


def test_export_checks_the_run_before_writing(exported: Path, tmp_path: Path, tiny: None) -> None:
    from boneage.export.export import export_run

    run = tmp_path / "run"
    shutil.copytree(exported.parent / "run", run)
    (run / "data.json").unlink()
    with pytest.raises(ConfigError, match="data.json"):
        export_run(run, "0.2.0", tmp_path / "out")
    (run / "data.json").write_text("{}")
    with pytest.raises(ConfigError, match="data summary"):
        export_run(run, "0.2.0", tmp_path / "out")
    (run / "config.json").write_text('{"backbone": "tiny_cnn"}')
    with pytest.raises(ConfigError, match="sources"):
        export_run(run, "0.2.0", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_lean_release_with_another_resize(exported: Path, tmp_path: Path, data_dir: Path, tiny: None) -> None:
    """A release can ship another resize than its run's (same size) and leave the .keras out."""
    from boneage.export.export import export_run
    from boneage.modelcard import file_sha256
    from boneage.preprocess import PreprocessConfig, StepConfig

    run = exported.parent / "run"
    config = json.loads((run / "config.json").read_text())
    size = config["input_size"]
    area = PreprocessConfig(steps=tuple(
        StepConfig(name=s["name"], params={**s.get("params", {}), "interpolation": "area"} if s["name"] == "resize"
                   else s.get("params", {})) for s in config["preprocessing"]["steps"]))
    (entry,) = export_run(run, "0.2.0", tmp_path / "lean", preprocessing=area, with_keras=False)
    assert sorted(p.name for p in (tmp_path / "lean").iterdir()) == [entry.file, "registry.json"]
    card = read_card((tmp_path / "lean" / entry.file).read_bytes(), entry.file)
    assert card.preprocessing == area and card.keras_sha256 is None and entry.keras_file is None
    assert card.notes["weights_sha256"] == file_sha256(run / "best.keras")
    estimator = BoneAgeEstimator(tmp_path / "lean" / entry.file)
    assert estimator.predict(sorted((data_dir / "rsna-512").glob("*.png"))[0], male=True).bone_age_months > 0
    with pytest.raises(Exception, match="only run on the ONNX runtime"):
        BoneAgeEstimator(tmp_path / "lean" / entry.file, runtime="tensorflow")
    with pytest.raises(ConfigError, match="resize step says size"):
        area.with_size(size * 2)  # it used to replace the size silently
    other_size = PreprocessConfig.default(size * 2)
    with pytest.raises(ConfigError, match="resizes to"):
        export_run(run, "0.2.1", tmp_path / "refused", preprocessing=other_size)
    assert not (tmp_path / "refused").exists()


def test_a_fine_tune_names_the_model_it_started_from(exported: Path, data_dir: Path, tmp_path: Path) -> None:
    from boneage import plugins
    from boneage.export.export import export_run
    from boneage.modelcard import file_sha256
    from boneage.training.train import train
    from tests import tiny_backbone
    from tests.test_training import small_config

    start = exported.parent / "run" / "best.keras"
    tiny_backbone.register()
    try:
        run = train(small_config(data_dir, tmp_path / "tuned", epochs=1, limit=64, val_limit=32, init_weights=str(start)),
                    verbose=0)
    finally:
        plugins.reset_plugins()
    tiny_backbone.register()  # export builds the run's backbone
    (entry,) = export_run(run, "0.1.1", tmp_path / "models")
    card = read_card((tmp_path / "models" / entry.file).read_bytes(), entry.file)
    assert card.notes["training"]["init_weights"] == {"file": "run/best.keras", "sha256": file_sha256(start)}


def test_evaluate_keras_and_onnx(models: Path, data_dir: Path, tmp_path: Path) -> None:
    from boneage.evaluation import evaluate, read_ids
    from boneage.training.config import DataSource

    run = models.parent / "run"
    source = [DataSource(labels=data_dir / "rsna-100/labels.csv", images=data_dir / "rsna-100")]
    ids = read_ids(run / "data.json")
    onnx = evaluate("boneage-tiny_cnn", source, tmp_path / "onnx", ids=ids)
    keras = evaluate(str(run / "best.keras"), source, tmp_path / "keras", ids=ids)  # TensorFlow: a .keras model
    assert keras["runtime"] == "tensorflow" and onnx["runtime"] == "onnx"
    assert onnx["images"] == keras["images"] == 48
    assert abs(onnx["overall"]["mae"] - keras["overall"]["mae"]) < 0.05
    for name in ("report.json", "summary.md", "plots.png", "predictions.csv"):
        assert (tmp_path / "onnx" / name).is_file()
    assert set(onnx["by_age"]) == {"0-2y", "2-6y", "6-10y", "10-14y", "14-19y"}
    assert onnx["interval_coverage"]["n"] == 48 and 0 <= onnx["interval_coverage"]["coverage"] <= 1
    assert "intervals" in (tmp_path / "onnx" / "summary.md").read_text() and "interval_coverage" not in keras
    with pytest.raises(ConfigError, match="--force"):
        evaluate("boneage-tiny_cnn", source, tmp_path / "onnx", ids=ids)  # never overwrites reports unasked
    assert evaluate("boneage-tiny_cnn", source, tmp_path / "onnx", ids=ids, force=True)["overall"] == onnx["overall"]


def test_float16_weights_halve_the_file_and_are_measured_as_shipped(models: Path, tmp_path: Path,
                                                                     data_dir: Path) -> None:
    """The shipped form from 0.5.0: weights stored in 16 bits, computed in float32, in the ONNX file and the
    .keras beside it; the card's metrics are the halved file's, and both runtimes answer within HALF_LIMIT
    of the float32 model."""
    from boneage.export.export import HALF_LIMIT, export_run

    run = models.parent / "run"
    (entry,) = export_run(run, "0.3.0", tmp_path / "half", float16_weights=True)
    full, half = models / "boneage-tiny_cnn-0.1.0.onnx", tmp_path / "half" / entry.file
    assert half.stat().st_size < 0.7 * full.stat().st_size
    assert entry.keras_file is not None
    assert (tmp_path / "half" / entry.keras_file).stat().st_size < 0.7 * (models / "boneage-tiny_cnn-0.1.0.keras").stat().st_size
    card = read_card(half.read_bytes(), entry.file)
    assert card.notes["weights_storage"] == "float16, computed in float32"
    assert 0 < card.metrics["validation"]["float16_shift_max_months"] <= HALF_LIMIT
    images = val_images(models, data_dir)
    answers = [[p.bone_age_months for p in BoneAgeEstimator(model, runtime=runtime).predict_batch(images, [True] * 6)]
               for model, runtime in ((full, "onnx"), (half, "onnx"), (half, "tensorflow"))]
    assert np.abs(np.subtract(answers[0], answers[1])).max() <= HALF_LIMIT
    assert np.abs(np.subtract(answers[0], answers[2])).max() <= HALF_LIMIT


def test_float16_weights_and_int8_are_refused_together_before_any_work(models: Path, tmp_path: Path) -> None:
    from boneage.export.export import export_run

    with pytest.raises(ConfigError, match="separate exports"):
        export_run(models.parent / "run", "0.4.0", tmp_path / "both", quantize="int8", float16_weights=True)
    assert not (tmp_path / "both").exists()
