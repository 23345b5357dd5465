"""What the ninth outside probe (issue 19) found in export versions, CSV outputs and charts, one test each."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from boneage.cli.main import main
from boneage.errors import ConfigError, InputError
from boneage.rows import COLUMNS, NUMBERS
from tests.helpers import write_png
from tests.test_probe8_export import fake_run

FORMULAS = ["=1+2", "+SUM(1)", "-2+3", "@SUM(1)", "\tTAB", "\rCR", "'quoted"]


def test_export_refuses_a_version_with_a_final_newline_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # SEMVER's "^...$" with .match took "1.0.0\n" ($ matches before a final newline): the conversion ran,
    # "tiny-1.0.0\n.onnx" was written, then the registry entry refused it: ValidationError, exit 70
    pytest.importorskip("tf2onnx", reason="needs the train extra")
    from boneage.export.export import export_run

    run, out = fake_run(tmp_path), tmp_path / "out"
    for version in ("1.0.0\n", "1.0.0\n\n", "\n1.0.0"):
        with pytest.raises(ConfigError, match="is not semantic"):
            export_run(run, version, out, name="tiny")
    assert main(["export", str(run), "--version", "1.0.0\n", "--name", "tiny", "--output", str(out)]) == 2
    assert "is not semantic" in capsys.readouterr().err
    assert not out.exists()


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def formula_images(folder: Path, radiograph: np.ndarray) -> list[str]:
    folder.mkdir()
    names = [f"{n}.png" for n in FORMULAS]
    for name in names:
        write_png(folder / name, radiograph)
    return names


def test_predict_csv_escapes_cells_a_spreadsheet_would_run_as_formulas(
        tiny_model: Path, radiograph: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # file names such as "=1+2.png" or "@SUM(1).png" were written raw: a spreadsheet opening the file ran them
    names = formula_images(tmp_path / "inj", radiograph)
    monkeypatch.chdir(tmp_path / "inj")
    assert main(["predict", "--sex", "f", "--age", "19y", "--model", str(tiny_model), "--output", "../r.csv",
                 "--", *names]) == 0
    rows = read_rows(tmp_path / "r.csv")
    assert sorted(r["source"] for r in rows) == sorted("'" + n for n in names)
    for row in rows:  # numbers stay numbers, a negative one too
        assert float(row["bone_age_minus_age_months"]) < 0 and row["bone_age_minus_age_months"].startswith("-")
        assert all(not row[c] or float(row[c]) == float(row[c]) for c in NUMBERS)
        assert all(not row[c] or row[c][0] not in "=+-@\t\r" for c in COLUMNS if c not in NUMBERS)


def test_resume_counts_escaped_rows_as_done(tiny_model: Path, radiograph: np.ndarray, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # the escaped source ("'=1+2.png") must still match its file, or every such image is answered again
    names = formula_images(tmp_path / "inj", radiograph)
    monkeypatch.chdir(tmp_path / "inj")
    args = ["predict", "--sex", "f", "--model", str(tiny_model), "--output", "../r.csv"]
    assert main([*args, "--", *names]) == 0
    with (tmp_path / "r.csv").open(newline="") as f:
        records = list(csv.reader(f))
    with (tmp_path / "r.csv").open("w", newline="") as f:
        csv.writer(f).writerows(records[:4])  # as if stopped after three rows
    assert main([*args, "--resume", "--", *names]) == 0
    assert sorted(r["source"] for r in read_rows(tmp_path / "r.csv")) == sorted("'" + n for n in names)


def test_evaluate_predictions_csv_escapes_ids_a_spreadsheet_would_run_as_formulas(
        tiny_model: Path, radiograph: np.ndarray, tmp_path: Path) -> None:
    # predictions.csv held the ids "=1+2", "@SUM(A1)" and "-5+1" raw
    images = tmp_path / "images"
    images.mkdir()
    ids = ["=1+2", "@SUM(A1)", "-5+1", "plain"]
    for name in ids:
        write_png(images / f"{name}.png", radiograph)
    (tmp_path / "labels.csv").write_text("id,boneage,male\n" + "".join(f"{i},60,1\n" for i in ids))
    out = tmp_path / "report"
    assert main(["evaluate", str(tiny_model), "--data", f"{tmp_path / 'labels.csv'}:{images}", "--output", str(out)]) == 0
    rows = read_rows(out / "predictions.csv")
    assert sorted(r["id"] for r in rows) == sorted(["'=1+2", "'@SUM(A1)", "'-5+1", "plain"])
    assert all(float(r["boneage"]) == 60 and float(r["predicted"]) == float(r["predicted"]) for r in rows)


def test_a_chart_format_that_needs_an_outside_program_is_refused(
        tiny_model: Path, radiograph: np.ndarray, tmp_path: Path) -> None:
    # .pgf was listed as supported, then needed xelatex: an untyped RuntimeError, part of the file left behind
    pytest.importorskip("matplotlib", reason="needs the plot extra")
    from boneage import BoneAgeEstimator

    estimator = BoneAgeEstimator(str(tiny_model))
    prediction = estimator.predict(radiograph, male=True, age_months=120)
    with pytest.raises(InputError, match="format its name ends with") as caught:
        estimator.plot(prediction, tmp_path / "c.pgf")
    listed = str(caught.value).split("one of ")[1]
    assert ".pgf" not in listed and ".eps" in listed
    assert not (tmp_path / "c.pgf").exists()


def test_a_chart_writer_that_fails_is_a_typed_error_and_writes_nothing(
        tiny_model: Path, radiograph: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a writer's own failure (pgf's missing xelatex, avif on an older Pillow) escaped as a RuntimeError
    pytest.importorskip("matplotlib", reason="needs the plot extra")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from boneage import BoneAgeEstimator

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no encoder for this")

    estimator = BoneAgeEstimator(str(tiny_model))
    prediction = estimator.predict(radiograph, male=True, age_months=120)
    monkeypatch.setattr(FigureCanvasAgg, "print_webp", broken)
    with pytest.raises(InputError, match=r"cannot write .*c\.webp as WEBP: no encoder for this"):
        estimator.plot(prediction, tmp_path / "c.webp")
    assert not (tmp_path / "c.webp").exists()


@pytest.mark.parametrize("dangling", [False, True])
def test_plot_refuses_a_symbolic_link(tiny_model: Path, radiograph: np.ndarray, tmp_path: Path, dangling: bool) -> None:
    # plot() wrote through a link: a link to target.txt overwrote it; a dangling link created its target
    pytest.importorskip("matplotlib", reason="needs the plot extra")
    from boneage import BoneAgeEstimator

    target, link = tmp_path / ("nothere.png" if dangling else "target.txt"), tmp_path / "link.png"
    if not dangling:
        target.write_text("keep")
    link.symlink_to(target)
    estimator = BoneAgeEstimator(str(tiny_model))
    prediction = estimator.predict(radiograph, male=True, age_months=120)
    with pytest.raises(InputError, match="link.png is a symbolic link: give the file it stands for"):
        estimator.plot(prediction, link)
    assert (not target.exists()) if dangling else target.read_text() == "keep"


@pytest.mark.parametrize("dangling", [False, True])
def test_explanation_save_refuses_a_symbolic_link(tiny_model: Path, radiograph: np.ndarray, tmp_path: Path,
                                                  dangling: bool) -> None:
    # Explanation.save wrote through a link, as plot() did
    from boneage import BoneAgeEstimator

    target, link = tmp_path / ("nothere.png" if dangling else "target.txt"), tmp_path / "heat.png"
    if not dangling:
        target.write_text("keep")
    link.symlink_to(target)
    explanation = BoneAgeEstimator(str(tiny_model)).explain(radiograph, male=True)
    with pytest.raises(InputError, match="heat.png is a symbolic link: give the file it stands for"):
        explanation.save(link)
    assert (not target.exists()) if dangling else target.read_text() == "keep"
    assert explanation.save(tmp_path / "plain.png").read_bytes()[:4] == b"\x89PNG"


def test_an_escaped_cell_reads_back_as_the_text_it_was() -> None:
    # (new with the escape) --resume undoes it exactly: "'=1" and "=1" are two names, never one cell
    from boneage.rows import spreadsheet_text, unescaped_text

    for text in [*FORMULAS, "plain", "", "''x", "-", "'"]:
        assert unescaped_text(spreadsheet_text(text)) == text
    assert len({spreadsheet_text(t) for t in ["=1", "'=1", "''=1"]}) == 3
    assert spreadsheet_text("-5") == "'-5"
