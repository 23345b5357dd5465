"""Probe 15, findings 5 and 6: whole numbers past float range in backbone_options, a .keras output layer or the
registry are refused as typed errors (they were OverflowError, exit 70), and a weight stored compressed, or in
another file, is refused from its HDF5 header before anything reads it (a 3 MB chunk inflated to 3 GiB)."""

from __future__ import annotations

import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from boneage.backbones import checked_options
from boneage.cli.main import main
from boneage.errors import ConfigError, InvalidModelError
from boneage.finite import finite_float
from boneage.models import load_registry
from boneage.plugins import get_plugins
from boneage.specs import BackboneSpec
from tests import test_backbone_options, test_probe13_keras
from tests.test_probe8_export import entry, write_registry
from tests.test_probe13_keras import SIZE, edited, layers_named, tiny_keras

BIG = 10**400  # JSON, TOML and YAML read a 401-digit literal as this int; no float holds it
BIG_TEXT = str(BIG)
ROOT = Path(__file__).resolve().parents[1]
no_densenet = test_backbone_options.no_densenet  # fixtures: a spy for the DenseNet builder, the tiny_cnn plugin
tiny = test_probe13_keras.tiny


# --- 5: whole numbers past float range ------------------------------------------------------------------------

def test_finite_float_takes_a_whole_number_past_float_range_as_not_finite() -> None:
    assert finite_float(BIG) is None and finite_float(-BIG) is None
    assert finite_float(float("nan")) is None and finite_float(True) is None and finite_float("1") is None
    assert finite_float(0) == 0.0 and finite_float(2**1000) == float(2**1000) and finite_float(-1.5) == -1.5


@pytest.mark.parametrize("key", ["head_units", "growth", "dropout", "compression", "age_mean", "age_std"])
@pytest.mark.parametrize("sign", [1, -1])
def test_a_built_in_option_past_float_range_is_the_typed_error(key: str, sign: int) -> None:
    spec = get_plugins().get("backbones", "densenet121").spec
    with pytest.raises(ConfigError, match=f"densenet121 backbone cannot be built.*{key} must be"):
        checked_options(spec, {key: sign * BIG}, ConfigError)


@pytest.mark.parametrize("value", [BIG, -BIG], ids=["big", "minus_big"])
def test_a_plugin_option_past_float_range_is_the_typed_error(value: int) -> None:
    spec = BackboneSpec(name="plugged", build=lambda size, **o: None, default_input_size=32, doc="")
    with pytest.raises(InvalidModelError, match="plugged backbone.*units must be a boolean, a finite number"):
        checked_options(spec, {"units": value}, InvalidModelError)
    assert checked_options(spec, {"units": 0, "rate": -65_536}, InvalidModelError) == {"units": 0, "rate": -65_536}


@pytest.mark.tensorflow
@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json"])
def test_a_training_config_with_a_401_digit_option_is_a_config_error_unbuilt(tmp_path: Path, no_densenet: list[Any],
                                                                            suffix: str) -> None:
    # probe: `train --config` with [backbone_options] dropout = BIG, and `--set backbone_options=...`: exit 70
    pytest.importorskip("yaml")
    from boneage.training.config import load_config
    from boneage.training.data import Record
    from boneage.training.train import build_and_compile

    text = {".toml": f'backbone = "densenet121"\noutput_dir = "{tmp_path / "run"}"\n[backbone_options]\n'
                     f"dropout = {BIG_TEXT}\n",
            ".yaml": f'backbone: densenet121\noutput_dir: "{tmp_path / "run"}"\nbackbone_options:\n  dropout: {BIG_TEXT}\n',
            ".json": f'{{"backbone": "densenet121", "output_dir": {json.dumps(str(tmp_path / "run"))}, '
                     f'"backbone_options": {{"head_units": {BIG_TEXT}}}}}'}[suffix]
    (tmp_path / f"c{suffix}").write_text(text)
    config = load_config(tmp_path / f"c{suffix}", {"sources": [{"labels": "x.csv", "images": "x"}]})
    records = [Record(str(i), Path(f"{i}.png"), 100.0 + i, bool(i % 2)) for i in range(4)]
    with pytest.raises(ConfigError, match="densenet121 backbone cannot be built.*(dropout|head_units) must be"):
        build_and_compile(config, records, steps_per_epoch=1)
    assert not no_densenet and not (tmp_path / "run").exists()


@pytest.mark.tensorflow
def test_a_run_config_with_a_401_digit_option_is_refused_unbuilt(tiny: None, tmp_path: Path) -> None:
    # probe: a run's config.json "backbone_options": {"growth": BIG}: export and train --resume were exit 70
    from boneage.models import card_from_run
    from boneage.runtimes.tensorflow import TensorFlowRuntime
    from boneage.training.train import load_saved

    path = tmp_path / "run" / "best.keras"
    tiny_keras(path)
    (path.parent / "config.json").write_text(f'{{"backbone": "tiny_cnn", "input_size": {SIZE}, '
                                             f'"backbone_options": {{"growth": {BIG_TEXT}}}}}')
    with pytest.raises(ConfigError, match="tiny_cnn backbone.*growth must be"):
        load_saved(path, "cannot start from it")
    with pytest.raises(InvalidModelError, match="tiny_cnn backbone.*growth must be"):
        TensorFlowRuntime(path.with_suffix(".onnx"), card_from_run(path))


def _marked(config: Any) -> Any:
    """``config`` with the output layer's scale replaced by a marker, where a literal no float holds goes."""
    (layer,) = layers_named(config, "boneage_months")
    layer["config"]["scale"] = "@SCALE@"
    return config


@pytest.mark.tensorflow
@pytest.mark.parametrize("scale", [BIG_TEXT, "-" + BIG_TEXT])
def test_an_output_scale_past_float_range_is_the_typed_error(tiny: None, tmp_path: Path, scale: str) -> None:
    # probe: a best.keras whose Rescaling boneage_months scale is 401 digits: --init-weights, --resume and
    # export were OverflowError, exit 70
    from boneage.backbones import load_keras_model
    from boneage.training.train import load_saved

    source = tmp_path / "src" / "best.keras"
    tiny_keras(source)
    target = tmp_path / "run" / "best.keras"
    target.parent.mkdir()
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            if name == "config.json":
                data = json.dumps(_marked(json.loads(data))).replace('"@SCALE@"', scale).encode()
            zout.writestr(name, data)
    (target.parent / "config.json").write_text(json.dumps({"backbone": "tiny_cnn", "input_size": SIZE}))
    with pytest.raises(InvalidModelError, match="output layer scales by.*not by finite months"):
        load_keras_model(target, "tiny_cnn", SIZE)
    with pytest.raises(ConfigError, match="output layer scales by"):
        load_saved(target, "cannot start from it")


@pytest.mark.parametrize("sign", ["", "-"])
def test_a_registry_metric_past_float_range_is_an_invalid_model_error(models_dir: Path, sign: str) -> None:
    # probe: registry.json "mae": BIG made `boneage models` an internal error (OverflowError, exit 70)
    write_registry(models_dir, entry(metrics={"n": 10, "mae": 7.25}))
    text = (models_dir / "registry.json").read_text().replace("7.25", sign + BIG_TEXT)
    (models_dir / "registry.json").write_text(text)
    with pytest.raises(InvalidModelError, match="metric 'mae' is a whole number of 401 digits"):
        load_registry(models_dir)
    assert main(["models"]) == 3


def test_a_registry_metric_of_a_huge_float_is_listed_in_a_few_digits(models_dir: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    write_registry(models_dir, entry(metrics={"n": 10**20, "mae": 1e300, "r2": float("nan")}))
    assert load_registry(models_dir).models[0].metrics["n"] == 10**20  # whole numbers a float holds stay whole
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "1e+300" in out and "0" * 50 not in out


# --- 6: weights stored compressed, or in other files --------------------------------------------------------

def _restored(source: Path, target: Path, store: Any) -> Path:
    """A copy of the .keras ``source`` whose first layer weight of at most 1 KB is re-stored by ``store(group,
    key, value)`` (h5py), at ``target``."""
    import h5py

    with zipfile.ZipFile(source) as archive:
        (target.parent / "w.h5").write_bytes(archive.read("model.weights.h5"))
    with h5py.File(target.parent / "w.h5", "a") as weights:
        names: list[str] = []
        weights.visititems(lambda name, item: names.append(name) if isinstance(item, h5py.Dataset) else None)
        name = next(n for n in names if n.startswith("layers/") and weights[n].nbytes <= 1024)
        value = weights[name][()]
        group, key = name.rsplit("/", 1)
        del weights[name]
        store(weights[group], key, value)
    return edited(source, target, weights=(target.parent / "w.h5").read_bytes())


def _inflating(group: Any, key: str, value: np.ndarray) -> None:
    """The weight as one gzip chunk of its own size (honest header) whose stream inflates to 16 MiB of zeros
    (the probe's 3 GiB took 3.8 GB and changed the answer; this is kept small should it be read)."""
    dataset = group.create_dataset(key, shape=value.shape, dtype=value.dtype, chunks=value.shape, compression="gzip")
    dataset.id.write_direct_chunk((0,) * value.ndim, zlib.compress(bytes(16 << 20), 9))


def _gzipped(group: Any, key: str, value: np.ndarray) -> None:
    group.create_dataset(key, data=value, chunks=value.shape, compression="gzip")


def _external(group: Any, key: str, value: np.ndarray) -> None:
    """The weight's values from a file beside the archive: HDF5 opens any path the file names."""
    outside = Path(group.file.filename).parent / "outside.bin"
    outside.write_bytes(value.tobytes())
    group.create_dataset(key, shape=value.shape, dtype=value.dtype, external=[(str(outside), 0, value.nbytes)])


def _virtual(group: Any, key: str, value: np.ndarray) -> None:
    import h5py

    outside = Path(group.file.filename).parent / "outside.h5"
    with h5py.File(outside, "w") as other:
        other.create_dataset("x", data=value)
    layout = h5py.VirtualLayout(shape=value.shape, dtype=value.dtype)
    layout[...] = h5py.VirtualSource(str(outside), "x", shape=value.shape)
    group.create_virtual_dataset(key, layout)


@pytest.mark.tensorflow
@pytest.mark.parametrize("store, message", [
    (_inflating, "stored through the HDF5 filter 'deflate'"),
    (_gzipped, "stored through the HDF5 filter 'deflate'"),
    (_external, "from a file outside the archive"),
    (_virtual, "from other HDF5 files"),
])
def test_a_weight_stored_compressed_or_in_other_files_is_refused_unread(tiny: None, tmp_path: Path, store: Any,
                                                                        message: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import h5py

    from boneage.backbones import load_keras_model

    source = tmp_path / "src" / "best.keras"
    tiny_keras(source)
    (tmp_path / "run").mkdir()
    crafted = _restored(source, tmp_path / "run" / "best.keras", store)
    reads: list[str] = []
    real = h5py.Dataset.__getitem__

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        reads.append(self.name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    with pytest.raises(InvalidModelError, match=f"does not hold the weights of a tiny_cnn model: its weight .*{message}"):
        load_keras_model(crafted, "tiny_cnn", SIZE)
    assert not reads  # refused from the headers


@pytest.mark.tensorflow
def test_keras_own_files_pass_the_storage_check(tiny: None, tmp_path: Path) -> None:
    """A freshly saved model, and the shipped .keras (its weights stored in float16), are stored as Keras
    stores weights: every dataset contiguous in the file, unfiltered."""
    import h5py

    from boneage.backbones import _storage_problem, load_keras_model

    tiny_keras(tmp_path / "run" / "best.keras")
    assert load_keras_model(tmp_path / "run" / "best.keras", "tiny_cnn", SIZE) is not None
    shipped = sorted((ROOT / "exported").glob("*.keras"))
    if not shipped:
        pytest.skip("no shipped .keras in exported/")
    def problems(path: Path) -> list[tuple[str, str | None]]:
        found: list[tuple[str, str | None]] = []
        with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as member, \
                h5py.File(member, "r") as weights:
            weights.visititems(lambda name, item: found.append((name, _storage_problem(item)))
                               if isinstance(item, h5py.Dataset) else None)
        assert found, path
        return [f for f in found if f[1]]

    for path in [tmp_path / "run" / "best.keras", *shipped]:
        assert not problems(path), path
