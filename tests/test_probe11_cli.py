"""What the eleventh outside probe found in ``predict --csv``, ``predict --plot`` and the labels of
``evaluate``, one test each (findings 1, 3, 9, 10 and 13 of its report)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from boneage.cli.main import main
from boneage.errors import ConfigError
from tests.helpers import synthetic_radiograph, write_png


def dicom(path: Path, **tags: str) -> Path:
    """A DICOM of a synthetic radiograph with these header tags (PatientSex, PatientAge)."""
    pytest.importorskip("pydicom", reason="the dicom extra is not installed")
    from tests.test_dicom import dataset, write

    return write(path, dataset(synthetic_radiograph(), **tags))


def listed(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def predict_json(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, Any]], str]:
    code = main(["predict", *args, "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_a_bad_row_of_a_dicom_is_its_own_error_not_the_header(tiny_model: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    # finding 1: each row was answered female, aged 180 months, from the header (F, 015Y), exit 0;
    # the row's own "m" was dropped with its bad age
    dicom(tmp_path / "base.dcm", PatientSex="F", PatientAge="015Y")
    rows = listed(tmp_path / "l.csv", "path,sex,age\nbase.dcm,m,12y3\nbase.dcm,yes,\nbase.dcm,m,2015-03-02\n"
                                      "base.dcm,m,\n")
    code, results, err = predict_json(["--csv", rows, "--model", str(tiny_model)], capsys)
    assert code == 2
    bad_age, bad_sex, date_as_age, good = results
    assert bad_age["error"]["type"] == "AgeError" and date_as_age["error"]["type"] == "AgeError"
    assert bad_sex["error"]["type"] == "SexError" and bad_sex["error"]["message"].startswith("line 3 of the list: sex must")
    # a valid cell wins over the header, which is compared with it and a difference warned about
    assert good["male"] is True and good["comparison"]["chronological_age_months"] == 180
    assert any("differs from the DICOM header" in w for w in good["warnings"])
    assert err.count("boneage: ") == 3


def test_rows_with_errors_are_never_sent_to_the_model(tiny_model: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # the same for any file: the row's error, and the model never runs for it (a list of bad rows only
    # runs nothing); the batch keeps its order around them
    from boneage.estimator import BoneAgeEstimator

    write_png(tmp_path / "a.png", synthetic_radiograph())
    sent: list[Any] = []
    original = BoneAgeEstimator.iter_predictions

    def spy(self: Any, images: Any, *args: Any, **kwargs: Any) -> Any:
        sent.extend(images)
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(BoneAgeEstimator, "iter_predictions", spy)
    rows = listed(tmp_path / "l.csv", "path,sex,age\na.png,m,12y3\na.png,f,10y\na.png,x,\n")
    code, results, _ = predict_json(["--csv", rows, "--model", str(tiny_model), "--batch-size", "1"], capsys)
    assert code == 2 and [("error" in r) for r in results] == [True, False, True]
    assert sent == [(tmp_path / "a.png").as_posix()]
    sent.clear()
    rows = listed(tmp_path / "bad.csv", "path,sex\na.png,x\n")
    code, results, _ = predict_json(["--csv", rows, "--model", str(tiny_model)], capsys)
    assert code == 2 and results[0]["error"]["type"] == "SexError" and sent == []


@pytest.mark.parametrize("option", [["--sex", "m"], ["--age", "10y"], ["--dob", "2015-01-01", "--study-date", "2025-01-01"]])
def test_sex_and_age_options_with_only_a_list_are_a_usage_error(tiny_model: Path, radiograph_png: Path, tmp_path: Path,
                                                                 option: list[str],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # finding 3: --sex m --age 10y were accepted and applied to no row; a PNG row then failed with
    # "pass ... --sex on the command line", which the user had done
    rows = listed(tmp_path / "l.csv", f"path,sex\n{radiograph_png.name},\n")
    assert main(["predict", "--csv", rows, *option, "--model", str(tiny_model)]) == 2
    err = capsys.readouterr().err
    assert "apply to FILE arguments, not to the rows of --csv" in err and option[0] in err


def test_sex_options_describe_the_files_and_the_list_its_rows(tiny_model: Path, radiograph_png: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # with FILE arguments too, --sex and --age are theirs; a list row without a sex names its cell
    rows = listed(tmp_path / "l.csv", f"path,sex\n{radiograph_png.name},\n")
    code, (file, row), err = predict_json([str(radiograph_png), "--sex", "m", "--age", "10y", "--csv", rows,
                                           "--model", str(tiny_model)], capsys)
    assert code == 2 and file["male"] is True and file["comparison"]["chronological_age_months"] == 120
    assert row["error"]["type"] == "SexError" and row["error"]["message"].startswith("line 2 of the list: its sex cell is empty")
    assert "--sex on the command line" not in err


def test_a_dicom_row_with_no_sex_anywhere_names_the_list_column(tiny_model: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    dicom(tmp_path / "nosex.dcm")
    rows = listed(tmp_path / "l.csv", "path,sex\nnosex.dcm,\n")
    code, (row,), _ = predict_json(["--csv", rows, "--model", str(tiny_model)], capsys)
    assert code == 2 and "a --csv list's sex column" in row["error"]["message"]


def test_a_plot_that_is_not_drawn_exits_2(tiny_model: Path, radiograph_png: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # finding 9: "no growth chart written" with exit 0, for a DICOM without an age and for --resume
    # with nothing left; a script took the chart for made
    pytest.importorskip("matplotlib", reason="--plot needs the plot extra")
    chart, results = tmp_path / "c.png", tmp_path / "r.csv"
    scan = dicom(tmp_path / "noage.dcm", PatientSex="F")
    assert main(["predict", str(scan), "--plot", str(chart), "--model", str(tiny_model)]) == 2
    assert "no growth chart written" in capsys.readouterr().err and not chart.exists()
    args = ["predict", str(radiograph_png), "--sex", "f", "--age", "10y", "--model", str(tiny_model),
            "--output", str(results), "--plot", str(chart)]
    assert main(args) == 0 and chart.is_file()
    assert main([*args, "--resume", "--force"]) == 2
    assert "no input was left to answer" in capsys.readouterr().err


def labels(tmp_path: Path, text: str) -> Any:
    from boneage.training.config import DataSource

    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for name in ("1377", "1394"):
        write_png(images / f"{name}.png", synthetic_radiograph())
    (tmp_path / "labels.csv").write_text(text)
    return DataSource(labels=tmp_path / "labels.csv", images=images)


def test_an_id_listed_twice_in_labels_is_refused_naming_it_and_its_lines(tmp_path: Path) -> None:
    # finding 10: 1377 three times (once as a boy) was scored three times: "3 images"
    from boneage.training.data import read_source

    source = labels(tmp_path, "id,boneage,male\n1377,180.0,0\n1377,180.0,0\n1377,180.0,1\n1394,57.0,1\n")
    with pytest.raises(ConfigError, match=r"1 id\(s\) listed more than once .*'1377' on lines 2, 3, 4"):
        read_source(source)


def test_ids_in_labels_are_stripped(tmp_path: Path) -> None:
    # " 1394" was "no image: skipped"; and " 1394" with "1394" is one id twice
    from boneage.training.data import read_source

    assert [r.id for r in read_source(labels(tmp_path, "id,boneage,male\n 1394 ,57.0,1\n1377,180,0\n"))] == ["1394", "1377"]
    with pytest.raises(ConfigError, match="'1394' on lines 2, 3"):
        read_source(labels(tmp_path, "id,boneage,male\n 1394,57.0,1\n1394,57.0,1\n"))


def test_evaluate_refuses_a_repeated_id(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = labels(tmp_path, "id,boneage,male\n1377,180.0,0\n1377,180.0,1\n")
    data = f"{source.labels}:{source.images}"
    assert main(["evaluate", str(tiny_model), "--data", data, "--output", str(tmp_path / "out")]) == 2
    assert "listed more than once" in capsys.readouterr().err


def test_a_row_with_more_cells_than_the_header_is_refused(tiny_model: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    # finding 13: "10y,3m" unquoted was read as 10y (120 months), the 3m dropped
    write_png(tmp_path / "x.png", synthetic_radiograph())
    rows = listed(tmp_path / "l.csv", 'path,sex,age\nx.png,f,10y,3m\nx.png,f,"10y,3m"\n')
    code, (extra, quoted), err = predict_json(["--csv", rows, "--model", str(tiny_model)], capsys)
    assert code == 2 and extra["error"]["message"].startswith("line 2 of the list: it holds 1 more cell(s) than the header")
    assert "10y,3m" not in err and "3m" not in extra["error"]["message"]
    assert quoted["error"]["type"] == "AgeError"  # "10y,3m" is no age; but it is one cell, and said so


def test_blank_lines_are_skipped_and_the_path_is_stripped(tiny_model: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # finding 13: a line of blanks was an input named "  " ("no such file"); " x.png" was not stripped
    write_png(tmp_path / "x.png", synthetic_radiograph())
    rows = listed(tmp_path / "l.csv", "sex,path\n  \nf, x.png \n,\n\nm,x.png\n")
    code, results, _ = predict_json(["--csv", rows, "--model", str(tiny_model)], capsys)
    assert code == 0 and [r["male"] for r in results] == [False, True]
    assert {r["source"] for r in results} == {(tmp_path / "x.png").as_posix()}


def test_labels_rows_keep_their_lines_through_blank_and_quoted_lines(tmp_path: Path) -> None:
    import csv
    import io

    from boneage.columns import numbered_rows

    rows = numbered_rows(csv.DictReader(io.StringIO('a,b\n1,2\n\n"x\ny",3\n4,5,6,7\n')))
    assert [(r.line, r.extra) for r in rows] == [(2, 0), (5, 0), (6, 2)]
    assert rows[1].cells == {"a": "x\ny", "b": "3"} and not any(r.blank for r in rows)
