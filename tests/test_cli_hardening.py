"""The command line under real use (issue 19): pipes, Ctrl-C, library noise, odd names and options."""

from __future__ import annotations

import csv
import json
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from boneage.cli.main import main
from boneage.estimator import BoneAgeEstimator
from tests.helpers import synthetic_radiograph, write_png


def boneage(*args: str, stdin_pipe: str = "") -> subprocess.CompletedProcess[str]:
    command = " ".join([sys.executable, "-m", "boneage.cli.main", *(f"'{a}'" for a in args)]) + stdin_pipe
    return subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=120)


def files(tmp_path: Path, n: int) -> list[str]:
    first = write_png(tmp_path / "r0.png", synthetic_radiograph())
    for i in range(1, n):
        shutil.copy(first, tmp_path / f"r{i}.png")
    return [str(tmp_path / f"r{i}.png") for i in range(n)]


def failing_on_batch(n: int, error: Callable[[], BaseException]) -> Callable[..., Iterator[object]]:
    """``iter_predictions`` that raises ``error()`` when the CLI asks for batch ``n``."""
    original = BoneAgeEstimator.iter_predictions

    def batches(self: BoneAgeEstimator, *args: object, **kwargs: object) -> Iterator[object]:
        for i, batch in enumerate(original(self, *args, **kwargs), 1):  # type: ignore[arg-type]
            if i == n:
                raise error()
            yield batch

    return batches


def test_closed_pipe_ends_quietly(tiny_model: Path, tmp_path: Path) -> None:
    out = boneage("predict", *files(tmp_path, 400), "--sex", "male", "--model", str(tiny_model), "--json",
                  stdin_pipe=" | head -1")
    assert out.stdout.strip() == "["
    assert "Error" not in out.stderr and "internal error" not in out.stderr and "Traceback" not in out.stderr
    assert out.returncode == 141


def test_library_noise_stays_off_the_terminal(tiny_model: Path, tmp_path: Path) -> None:
    """libpng warns straight to file descriptor 2 about a damaged ancillary chunk: a transparency chunk, the one
    the decoder is given (others are left out before it, so libpng cannot warn of them: row 265)."""
    png = write_png(tmp_path / "noisy.png", synthetic_radiograph()).read_bytes()
    chunk = b"tRNS" + b"\0\5"
    (tmp_path / "noisy.png").write_bytes(png[:33] + struct.pack(">I", len(chunk) - 4) + chunk + b"\0\0\0\0" + png[33:])
    quiet = boneage("predict", str(tmp_path / "noisy.png"), "--sex", "female", "--model", str(tiny_model))
    assert quiet.returncode == 0 and "libpng" not in quiet.stderr, quiet.stderr
    verbose = boneage("-v", "predict", str(tmp_path / "noisy.png"), "--sex", "female", "--model", str(tiny_model))
    assert verbose.returncode == 0 and "libpng warning" in verbose.stderr


def test_ctrl_c_keeps_finished_results_and_resume_finishes(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = files(tmp_path, 7)
    interrupted_on_third_batch = failing_on_batch(3, lambda: KeyboardInterrupt)

    monkeypatch.setattr(BoneAgeEstimator, "iter_predictions", interrupted_on_third_batch)
    results = tmp_path / "results.csv"
    common = [*inputs, "--sex", "m", "--model", str(tiny_model), "--batch-size", "2", "--output", str(results)]
    assert main(["predict", *common]) == 130
    assert "stopped after 4 of 7" in capsys.readouterr().err
    assert [r["source"] for r in csv.DictReader(results.open())] == inputs[:4]
    # Without --resume the file is not overwritten unasked.
    assert main(["predict", *common]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["predict", *common, "--resume"]) == 0
    assert "4 inputs already in" in capsys.readouterr().err
    rows = list(csv.DictReader(results.open()))
    assert [r["source"] for r in rows] == inputs and all(r["sex"] == "male" and r["bone_age_months"] for r in rows)


def test_ctrl_c_without_output_prints_what_is_done(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    interrupted_on_second_batch = failing_on_batch(2, lambda: KeyboardInterrupt)

    monkeypatch.setattr(BoneAgeEstimator, "iter_predictions", interrupted_on_second_batch)
    code = main(["predict", *files(tmp_path, 5), "--sex", "f", "--model", str(tiny_model), "--batch-size", "2", "--json"])
    out = capsys.readouterr()
    assert code == 130 and len(json.loads(out.out)) == 2 and "stopped after 2 of 5" in out.err


def test_resume_drops_a_line_cut_short(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs = files(tmp_path, 3)
    results = tmp_path / "results.jsonl"
    assert main(["predict", *inputs, "--sex", "male", "--model", str(tiny_model), "--output", str(results)]) == 0
    lines = results.read_text().splitlines()
    results.write_text(lines[0] + "\n" + lines[1][:20])  # killed while writing the second line
    assert main(["predict", *inputs, "--sex", "male", "--model", str(tiny_model), "--output", str(results), "--resume"]) == 0
    assert sorted(json.loads(line)["source"] for line in results.read_text().splitlines()) == sorted(inputs)


@pytest.mark.parametrize("bad", ["results.txt", "missing-folder/results.csv"])
def test_bad_output_files_are_input_errors(tiny_model: Path, tmp_path: Path, bad: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["predict", *files(tmp_path, 1), "--sex", "male", "--model", str(tiny_model), "--output", str(tmp_path / bad)])
    err = capsys.readouterr().err
    assert code == 2 and ("suffix must be" in err or "cannot write" in err), err


def test_control_characters_in_names_are_escaped(tiny_model: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    name = tmp_path / "evil\x1b[2J\x07.png"
    write_png(name, synthetic_radiograph())
    missing = tmp_path / "gone\x1b]0;pwned\x07.png"
    assert main(["predict", str(name), str(missing), "--sex", "male", "--model", str(tiny_model)]) == 2
    out = capsys.readouterr()
    assert "\x1b" not in out.out and "\x07" not in out.out and "\x1b" not in out.err
    assert "evil\\x1b[2J\\x07.png" in out.out and "gone\\x1b]0;pwned\\x07.png" in out.err


@pytest.mark.parametrize("spelling", ["M", "F", "Male", "FEMALE"])
def test_sex_spellings_of_csv_files_work_on_the_command_line(
    tiny_model: Path, radiograph_png: Path, spelling: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["predict", str(radiograph_png), "--sex", spelling, "--model", str(tiny_model), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["male"] is spelling.lower().startswith("m")


@pytest.mark.parametrize("threads", ["0", "100000"])
def test_threads_are_bounded(threads: str) -> None:
    out = boneage("predict", "x.png", "--sex", "male", "--threads", threads)
    assert out.returncode == 2 and "--threads" in out.stderr


def test_exif_note_reaches_json_and_csv(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_image_hardening import with_orientation

    path = tmp_path / "tagged.jpg"
    path.write_bytes(with_orientation(synthetic_radiograph(), 6, "JPEG"))
    assert main(["predict", str(path), "--sex", "male", "--model", str(tiny_model), "--json"]) == 0
    assert "EXIF orientation 6" in json.loads(capsys.readouterr().out)[0]["notes"][0]
    results = tmp_path / "r.csv"
    assert main(["predict", str(path), "--sex", "male", "--model", str(tiny_model), "--output", str(results)]) == 0
    assert "EXIF orientation 6" in next(csv.DictReader(results.open()))["notes"]


def test_resume_needs_output(tiny_model: Path, radiograph_png: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(radiograph_png), "--sex", "male", "--resume"]) == 2
    assert "--resume needs --output" in capsys.readouterr().err



def test_a_model_failing_mid_batch_keeps_what_is_done(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from boneage.errors import ModelOutputError

    fails_on_second_batch = failing_on_batch(2, lambda: ModelOutputError("the model answered NaN"))

    monkeypatch.setattr(BoneAgeEstimator, "iter_predictions", fails_on_second_batch)
    results = tmp_path / "results.jsonl"
    code = main(["predict", *files(tmp_path, 5), "--sex", "f", "--model", str(tiny_model), "--batch-size", "2",
                 "--output", str(results)])
    err = capsys.readouterr().err
    assert code == 3 and "answered NaN" in err and "stopped after 2 of 5" in err
    assert len(results.read_text().splitlines()) == 2


def test_a_folder_is_scored_recursively_by_pattern(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 21: a folder in, one row per matching file, symlinked folders not followed."""
    root = tmp_path / "archive"
    (root / "a" / "b").mkdir(parents=True)
    for name in ("a/one.png", "a/b/two.PNG", "three.png"):
        write_png(root / name, synthetic_radiograph())
    (root / "notes.txt").write_text("not an image")
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)
    assert main(["predict", str(root), "--sex", "m", "--model", str(tiny_model), "--json"]) == 0
    sources = [r["source"] for r in json.loads(capsys.readouterr().out)]
    assert sources == sorted(str(root / n) for n in ("a/one.png", "a/b/two.PNG", "three.png"))
    assert main(["predict", str(root), "--sex", "m", "--model", str(tiny_model), "--pattern", "*.gif"]) == 2
    assert "no files matching" in capsys.readouterr().err


def test_parquet_output_survives_a_kill_and_resumes(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    pq = pytest.importorskip("pyarrow.parquet", reason="extra: parquet")
    inputs = files(tmp_path, 7)
    out = tmp_path / "results.parquet"
    common = ["predict", *inputs, "--sex", "f", "--model", str(tiny_model), "--batch-size", "2", "--output", str(out)]
    killed_on_third_batch = failing_on_batch(3, lambda: KeyboardInterrupt)

    from boneage.cli.results import ResultFile

    # A SIGKILL after two batches: nothing is tidied up, so the Parquet file is never written.
    monkeypatch.setattr(BoneAgeEstimator, "iter_predictions", killed_on_third_batch)
    monkeypatch.setattr(ResultFile, "close", lambda self: self._file.close())
    assert main(common) == 130
    monkeypatch.undo()
    journal = tmp_path / "results.parquet.partial.jsonl"
    assert not out.exists() and len(journal.read_text().splitlines()) == 4  # two batches were journalled
    assert main([*common, "--resume"]) == 0
    assert "4 inputs already in" in capsys.readouterr().err
    table = pq.read_table(out).to_pylist()
    assert [r["source"] for r in table] == inputs and not journal.exists()
    assert all(r["sex"] == "female" and r["bone_age_months"] > 0 for r in table)
    assert main([*common, "--resume"]) == 0 and len(pq.read_table(out)) == 7  # nothing to do, nothing lost


def test_parquet_without_pyarrow_names_the_extra(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import builtins

    real_import = builtins.__import__

    def no_pyarrow(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("pyarrow"):
            raise ImportError("No module named 'pyarrow'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    code = main(["predict", *files(tmp_path, 1), "--sex", "f", "--model", str(tiny_model), "--output", str(tmp_path / "r.parquet")])
    assert code == 5 and "boneage[parquet]" in capsys.readouterr().err
