"""Probe 16's observations on the command line: the service's body limit has a ceiling, thousands of --pattern globs
cost one match per file, and a pattern that matches nothing is not echoed whole."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from boneage.cli.main import main
from boneage.cli.predict import expand
from boneage.errors import InputError
from boneage.serve.settings import MAX_UPLOAD_BYTES, ServeSettings
from tests.helpers import tiny_card, write_tiny_model


def test_the_upload_limit_has_a_ceiling(capsys: pytest.CaptureFixture[str]) -> None:
    """--max-upload-mb 99999999999999999999 was accepted: no body limit at all."""
    with pytest.raises(ValidationError):
        ServeSettings(max_upload_bytes=MAX_UPLOAD_BYTES + 1)
    assert main(["serve", "--max-upload-mb", "99999999999999999999"]) == 2
    assert "--max-upload-mb: at most 1,024 (MiB), not 1e+20" in capsys.readouterr().err


def test_many_patterns_match_as_one(tmp_path: Path) -> None:
    for name in ("a.PNG", "b.jpg", "c.txt", "d.dcm"):
        (tmp_path / name).write_bytes(b"")
    assert [Path(p).name for p in expand(str(tmp_path), "*.png, *.JPG,,")] == ["a.PNG", "b.jpg"]
    many = ",".join(f"*{k}.zzz" for k in range(4000)) + ",*.dcm"
    assert [Path(p).name for p in expand(str(tmp_path), many)] == ["d.dcm"]
    with pytest.raises(InputError) as refused:
        expand(str(tmp_path), many.replace("*.dcm", "*.none"))
    assert len(str(refused.value)) < 300  # the 47 KB pattern was echoed whole


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_resume_goes_on_only_with_the_model_of_the_answers(tmp_path: Path, radiograph_png: Path, tiny_model: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str], suffix: str) -> None:
    """Another model skipped the inputs already answered: one file mixed two models, a corrected rerun did nothing."""
    if suffix == ".parquet":
        pytest.importorskip("pyarrow", reason="needs pyarrow (extra: parquet)")
    monkeypatch.chdir(tmp_path)
    second = tmp_path / "second.png"
    second.write_bytes(radiograph_png.read_bytes())
    out = f"results{suffix}"
    assert main(["predict", str(radiograph_png), "--sex", "m", "--model", str(tiny_model), "--output", out]) == 0
    other = write_tiny_model(tmp_path / "other.onnx", card=tiny_card(version="9.9.9"))
    before = (tmp_path / out).read_bytes()
    capsys.readouterr()
    assert main(["predict", str(radiograph_png), str(second), "--sex", "m", "--model", str(other), "--output", out,
                 "--resume"]) == 2
    assert "holds answers of " in capsys.readouterr().err and (tmp_path / out).read_bytes() == before
    assert main(["predict", str(radiograph_png), str(second), "--sex", "m", "--model", str(tiny_model), "--output", out,
                 "--resume"]) == 0
    assert "1 inputs already in" in capsys.readouterr().err
