"""The Ray engine (extra: ray) gives the local engine's rows, failures included, in input order.

The tests marked ``ray`` start their own local Ray (2 CPUs, 2 actors) and score real radiographs;
the session ``tests_ray`` runs them. The others need no Ray and run everywhere."""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from boneage.cli.main import main
from boneage.cli.results import flat
from boneage.engines.ray import result
from boneage.estimator import BoneAgeEstimator

BATCH = 4  # 11 inputs: three batches, so both actors get work


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def inputs(data_dir: Path) -> tuple[list[str], list[Any], list[float | None]]:
    """8 real radiographs, a missing file, a sex that is no sex and a missing sex (which only a
    DICOM header could give); two with the child's age."""
    files = sorted((data_dir / "rsna-512").glob("*.png"))[:8]
    paths = [*map(str, files[:5]), str(data_dir / "rsna-512" / "missing.png"), *map(str, files[5:]), str(files[0]),
             str(files[1])]
    male: list[Any] = [True, False, True, False, True, True, False, True, False, "yes", None]
    ages: list[float | None] = [None, 120.0, None, None, 150.0, None, None, None, None, None, None]
    return paths, male, ages


@pytest.fixture(params=["tiny", "default"])
def model(request: pytest.FixtureRequest) -> str | None:
    return str(request.getfixturevalue("tiny_model")) if request.param == "tiny" else None


@pytest.mark.ray
def test_ray_rows_equal_local_rows(local_ray: Any, inputs: tuple[list[str], list[Any], list[float | None]],
                                   model: str | None) -> None:
    from boneage.engines.ray import predict_files

    paths, male, ages = inputs
    local = BoneAgeEstimator(model).predict_many(paths, male, BATCH, ages=ages)
    expected = [flat(result(p, o)) for p, o in zip(paths, local, strict=True)]
    rows = predict_files(paths, male, ages, model=model, actors=2, batch_size=BATCH)
    assert rows == expected
    assert [r["source"] for r in rows] == paths
    assert [rows[i]["error_type"] for i in (5, 9, 10)] == ["ImageReadError", "SexError", "SexError"]
    assert sum(r["error_type"] is None for r in rows) == 8 and rows[1]["chronological_age_months"] == 120.0


@pytest.mark.ray
def test_cli_ray_engine_writes_the_local_engines_parquet(local_ray: Any, tiny_model: Path, tmp_path: Path,
                                                         inputs: tuple[list[str], list[Any], list[float | None]]) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    paths, male, ages = inputs
    listing = tmp_path / "list.csv"
    with listing.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "sex", "age"])
        writer.writerows([Path(p).resolve(), {True: "male", False: "female"}.get(m, "unknown"), "" if a is None else a]
                         for p, m, a in zip(paths, male, ages, strict=True))
    tables = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"{engine}.parquet"
        extra = ["--actors", "2"] if engine == "ray" else []
        code = main(["predict", "--csv", str(listing), "--model", str(tiny_model), "--batch-size", str(BATCH),
                     "--output", str(out), "--engine", engine, *extra])
        assert code == 2  # three inputs failed, as rows
        tables[engine] = pq.read_table(out).to_pylist()
    assert tables["ray"] == tables["local"]
    assert len(tables["ray"]) == 11
    assert [tables["ray"][i]["error"] for i in (9, 10)] == [
        f"line {line} of the list: sex must be male or female (m/f, 1/0, true/false); the value given (7 characters) "
        "is not one of them and is not shown" for line in (11, 12)]  # each row's error says where it is


def test_engine_ray_without_ray_names_the_extra(tiny_model: Path, radiograph_png: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as where it is not installed
    out = tmp_path / "out.csv"
    code = main(["predict", str(radiograph_png), "--sex", "f", "--model", str(tiny_model), "--engine", "ray",
                 "--output", str(out)])
    assert code == 5 and 'pip install "boneage[ray]"' in capsys.readouterr().err
    assert not out.exists()  # said before any output
    assert main(["predict", str(radiograph_png), "--sex", "f", "--model", str(tiny_model)]) == 0  # local: no Ray


def test_ray_options_need_the_ray_engine(tiny_model: Path, radiograph_png: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["predict", str(radiograph_png), "--sex", "f", "--model", str(tiny_model), "--actors", "2"])
    assert code == 2 and "--engine ray" in capsys.readouterr().err


@pytest.mark.ray
def test_ray_reads_the_sex_from_a_dicom_header(local_ray: Any, data_dir: Path, tmp_path: Path) -> None:
    """No sex given: the actor takes it from the header, as the local engine does."""
    pytest.importorskip("pydicom", reason="the dicom extra is not installed")
    import cv2

    from boneage.engines.ray import predict_files
    from tests.test_dicom import dataset, write

    png = sorted((data_dir / "rsna-512").glob("*.png"))[0]
    scan = write(tmp_path / "scan.dcm", dataset(cv2.imread(str(png), cv2.IMREAD_GRAYSCALE), PatientSex="F"))
    (row,) = predict_files([str(scan)], [None], model=None, actors=1)
    assert row["error_type"] is None and row["sex"] == "female"
    assert row["bone_age_months"] == BoneAgeEstimator().predict(png, male=False).bone_age_months
