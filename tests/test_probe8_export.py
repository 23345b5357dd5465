"""What the eighth outside probe (issue 19) found in export and the registry, one test each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from boneage.cli.main import main
from boneage.errors import ConfigError, ExportError, InvalidModelError
from boneage.models import load_registry


def fake_run(root: Path) -> Path:
    """A run folder export reads up to the point where it loads the model: its .keras is never loaded."""
    run = root / "run"
    run.mkdir()
    (run / "best.keras").write_bytes(b"not a model: never loaded")
    (run / "config.json").write_text('{"sources": [{"labels": "labels.csv", "images": "images"}]}')
    (run / "data.json").write_text('{"train_images": 9, "val_images": 1, "sources": [{"images": "images"}]}')
    return run


NOT_PLAIN = ["../escaped", "sub/x", "a\\b", "\x1b[31mred", "..", ".hidden", "a..b", "", "x" * 101, "naïve", "a b"]


@pytest.mark.parametrize("name", NOT_PLAIN)
def test_export_refuses_a_name_that_is_not_a_plain_name_before_any_work(tmp_path: Path, name: str) -> None:
    # --name was joined into the file names unchecked: "../escaped" wrote the .onnx and .keras outside
    # --output and left a registry whose default was "../escaped-1.0.0"; "sub/x" was an internal error
    # (exit 70) after the conversion; an escape sequence made a file with ESC in its name, printed raw
    from boneage.export.export import export_run

    with pytest.raises(ConfigError, match="is not a plain name") as caught:
        export_run(tmp_path / "no-such-run", "1.0.0", tmp_path / "out", name=name)  # checked before the run is read
    assert "\x1b" not in str(caught.value) and len(str(caught.value)) < 400
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_export_cli_refuses_an_escaping_name_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # `boneage export run --name ../escaped --output out` exited 0 with the model written beside out/
    pytest.importorskip("tf2onnx", reason="needs the train extra")
    run = fake_run(tmp_path)
    assert main(["export", str(run), "--version", "1.0.0", "--name", "../escaped", "--output", str(tmp_path / "out")]) == 2
    assert "is not a plain name" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("existing", ["mine-2.0.0.keras", "mine-int8-2.0.0.onnx"])
def test_export_refuses_to_replace_any_existing_file_of_the_release_without_force(tmp_path: Path, existing: str) -> None:
    # only NAME-VERSION.onnx was checked: a .keras (or the int8 .onnx) of the same name and version was
    # written over without --force
    pytest.importorskip("keras", reason="needs the train extra")
    from boneage.export.export import export_run

    run, out = fake_run(tmp_path), tmp_path / "out"
    out.mkdir()
    (out / existing).write_text("my own file")
    with pytest.raises(ExportError, match="exists: bump --version, or pass --force"):
        export_run(run, "2.0.0", out, name="mine", quantize="int8")
    assert (out / existing).read_text() == "my own file" and sorted(p.name for p in out.iterdir()) == [existing]


def write_registry(models_dir: Path, *entries: dict[str, object]) -> None:
    (models_dir / "registry.json").write_text(json.dumps({"default": "tiny-1.0.0", "models": list(entries)}))


def entry(**changes: object) -> dict[str, object]:
    return {"name": "tiny", "version": "1.0.0", "file": "tiny-1.0.0.onnx", "sha256": "0" * 64, "size": 1,
            "backbone": "b", **changes}


@pytest.mark.parametrize("mae", ["abc", [1], {"x": 1}, None, True])
def test_a_registry_whose_metrics_are_not_numbers_is_an_invalid_model_error(models_dir: Path, mae: object) -> None:
    # `boneage models` on "metrics": {"mae": "abc"} (or [1]) was "internal error: ValueError: Unknown format
    # code 'f' for object of type 'str'" (exit 70), while predictions with the same registry worked
    write_registry(models_dir, entry(metrics={"n": 10, "mae": mae}))
    with pytest.raises(InvalidModelError, match="metrics"):
        load_registry(models_dir)
    assert main(["models"]) == 3


def test_a_registry_with_numeric_metrics_is_listed(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_registry(models_dir, entry(metrics={"n": 10, "mae": 7.25, "r2": float("nan")}))
    assert load_registry(models_dir).models[0].metrics["n"] == 10  # a count stays a whole number
    assert main(["models"]) == 0 and "7.25" in capsys.readouterr().out


def test_a_registry_that_lists_one_release_twice_is_an_invalid_model_error(models_dir: Path) -> None:
    # the same name and version twice was accepted, and both entries were listed as the default
    write_registry(models_dir, entry(), entry(file="other.onnx"))
    with pytest.raises(InvalidModelError, match="tiny-1.0.0 twice"):
        load_registry(models_dir)
    assert main(["models"]) == 3


@pytest.mark.parametrize("name", ["../escaped", "sub/x", "\x1b[2Jtiny", ""])
def test_a_registry_entry_whose_name_is_not_a_plain_name_is_an_invalid_model_error(models_dir: Path, name: str) -> None:
    # a registry could name a release "../escaped" (as export wrote it), a path or an escape sequence
    write_registry(models_dir, entry(name=name))
    with pytest.raises(InvalidModelError, match="plain name"):
        load_registry(models_dir)
