"""The command line as a user meets it: tables, JSON, bad files, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from boneage.cli.main import COMMANDS, main
from boneage.errors import ConfigError
from tests.helpers import synthetic_radiograph, write_png


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "boneage.cli.main", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_version_is_fast_and_light() -> None:
    code = ("import sys; from boneage.cli.main import main\ntry: main(['--version'])\nexcept SystemExit: pass\n"
            "print([m for m in ('numpy', 'onnxruntime', 'cv2', 'pydantic') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("boneage ") and out.stdout.strip().endswith("[]")


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_on_every_command(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"] if command else ["--help"])
    assert exc.value.code == 0 and "usage: boneage" in capsys.readouterr().out


def test_predict_table_and_json(tiny_model: Path, radiograph_png: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(radiograph_png), "--sex", "female", "--model", str(tiny_model)]) == 0
    table = capsys.readouterr().out
    assert "female" in table and "tiny 1.0.0 (onnx)" in table and " mo (" in table
    assert main(["predict", str(radiograph_png), "--sex", "male", "--model", str(tiny_model), "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["male"] is True and entry["bone_age_months"] > 0


def test_batch_keeps_going_past_bad_files(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = [write_png(tmp_path / f"hand {i}.png", synthetic_radiograph(seed=i)) for i in range(3)]
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    files = [str(good[0]), str(empty), str(tmp_path / "missing.png"), str(good[1]), str(good[2])]
    code = main(["predict", *files, "--sex", "m", "--model", str(tiny_model), "--json", "--batch-size", "2"])
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert code == 2 and len(results) == 5
    assert [("error" in r) for r in results] == [False, True, True, False, False]
    assert results[1]["error"]["type"] == "ImageReadError"
    assert "empty.png" in captured.err and "missing.png" in captured.err


def test_predict_from_csv(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_png(tmp_path / "a.png", synthetic_radiograph(seed=1))
    write_png(tmp_path / "b.png", synthetic_radiograph(seed=2))
    (tmp_path / "list.csv").write_text("path,sex\na.png,female\nb.png,yes\n")
    assert main(["predict", "--csv", str(tmp_path / "list.csv"), "--model", str(tiny_model), "--json"]) == 2
    results = json.loads(capsys.readouterr().out)
    assert results[0]["male"] is False and results[1]["error"]["type"] == "SexError"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["predict", "x.png"], "--sex male|female is required"),
        (["predict"], "no input"),
        (["predict", "x.png", "--sex", "male", "--model", "/nonexistent/model.onnx"], "not found"),
        (["predict", "x.png", "--sex", "male", "--runtime", "warp"], "no runtime named 'warp'"),
    ],
)
def test_errors_are_one_line(args: list[str], message: str, tiny_model: Path) -> None:
    if "--runtime" in args:
        args = [*args, "--model", str(tiny_model)]
    out = run(*args)
    assert out.returncode != 0 and message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("args", "message"), [(["--sex", "yes"], "sex must be male or female"), (["--sex", "male", "--batch-size", "0"], "at least 1")])
def test_bad_options_are_usage_errors(args: list[str], message: str) -> None:
    out = run("predict", "x.png", *args)
    assert out.returncode == 2 and message in out.stderr


def test_plugins_lists_builtins() -> None:
    out = run("plugins", env={"BONEAGE_DISABLE_PLUGIN_AUTOLOAD": "1"})
    assert out.returncode == 0
    for name in ("grayscale", "hand_crop", "classical", "mediapipe", "densenet121", "resnet34_cbam", "onnx", "tensorflow"):
        assert name in out.stdout
    assert "built-in" in out.stdout


def test_models_lists_registry(models_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_estimator import registered

    registered(models_dir)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "tiny-1.0.0" in out and "*" in out
    sha = json.loads((models_dir / "registry.json").read_text())["models"][0]["sha256"]
    assert sha[:12] in out


def test_table_rounds_months_into_whole_years() -> None:
    from boneage.cli.predict import table

    row = {"source": "a.png", "male": True, "bone_age_months": 167.7, "model_name": "m", "model_version": "1",
           "runtime": "onnx", "warnings": []}
    assert "167.7 mo (14y 0m)" in table([row])


def test_time_limit_durations() -> None:
    from boneage.cli.train import duration

    assert [duration(t) for t in ("90", "90s", "45m", "2h", "0.5h", "2h25m", "1h0m30s")] == [
        90, 90, 2700, 7200, 1800, 8700, 3630]
    for bad in ("", "m", "-5m", "ten", "25m2h", "inf", "0s", "h"):
        with pytest.raises(ConfigError, match="--time-limit"):
            duration(bad)
