"""What the fifteenth outside probe found in the files boneage reads and writes: a CSV header checked in
quadratic time (finding 8), fixed temporary names that wrote through a link or over a file (finding 9), and
``--resume`` reading a Parquet file into Python rows however many it claims (finding 10)."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from boneage.cli.main import main
from boneage.columns import MAX_COLUMNS, ColumnsError, csv_rows, numbered_rows
from boneage.errors import ConfigError, InputError
from boneage.rows import COLUMNS

# -- finding 8: the header's width ---------------------------------------------------------------------------


def _header(width: int) -> str:
    return "path,sex," + ",".join(f"c{i}" for i in range(width - 2))


def test_a_header_wider_than_the_bound_is_refused() -> None:
    # 100,000 columns ran past 120 s (keys.count per key), and the reader split them all before any check
    with pytest.raises(ColumnsError, match=f"a line holds more than {4 * MAX_COLUMNS:,} commas"):
        csv_rows(f"{_header(100_000)}\nx.png,m\n".encode())
    with pytest.raises(ColumnsError, match=f"1,001 columns, more than {MAX_COLUMNS:,}"):
        csv_rows(f"{_header(MAX_COLUMNS + 1)}\nx.png,m\n".encode())


def test_a_row_of_far_more_cells_than_any_header_is_refused_before_it_is_split() -> None:
    with pytest.raises(ColumnsError, match="commas"):
        csv_rows(("path,sex\nx.png,m" + "," * 100_000 + "\n").encode())


def test_a_header_at_the_bound_is_read_and_its_duplicates_found() -> None:
    rows = csv_rows(f"{_header(MAX_COLUMNS)}\nx.png,m\n".encode())
    assert rows[0].cells["path"] == "x.png" and len(rows[0].cells) == MAX_COLUMNS
    with pytest.raises(ColumnsError, match="two columns are named 'c5'"):
        csv_rows(f"{_header(MAX_COLUMNS - 1)}, C5 \n".encode())


def test_the_cells_of_all_rows_are_bounded_short_ones_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    # each short row became a dict of every column: a 45 KB file of 1,000 columns took 1.7 GB, and rows a fifth
    # full got past a bound on missing cells
    import boneage.columns

    monkeypatch.setattr(boneage.columns, "MAX_CELLS", 10_000)
    with pytest.raises(ColumnsError, match="more than 10,000 cells"):
        csv_rows((f"{_header(MAX_COLUMNS)}\n" + "x\n" * 11).encode())
    rows = csv_rows(("path,sex,age,dob,study_date\n" + "a.png\n" * 2000).encode())  # 10,000 cells: read
    assert len(rows) == 2000 and rows[0].cells["sex"] is None


def test_numbered_rows_still_reads_a_reader() -> None:
    rows = numbered_rows(csv.DictReader(io.StringIO("Path, SEX\na.png,m\nb.png\n")))
    assert [r.cells for r in rows] == [{"path": "a.png", "sex": "m"}, {"path": "b.png", "sex": None}]


def test_a_wide_list_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "wide.csv"
    listing.write_text(f"{_header(2_000)}\nx.png,m\n")
    assert main(["predict", "--csv", str(listing)]) == 2
    err = capsys.readouterr().err
    assert "cannot read the list" in err and "2,000 columns" in err


def test_a_wide_labels_file_is_a_config_error(tmp_path: Path) -> None:
    pytest.importorskip("pydantic")
    from boneage.training.config import DataSource
    from boneage.training.data import read_source

    labels = tmp_path / "labels.csv"
    labels.write_text("id,boneage,male," + ",".join(f"c{i}" for i in range(2_000)) + "\n1,100,1\n")
    with pytest.raises(ConfigError, match=r"labels file .*labels.csv: its header names 2,003 columns"):
        read_source(DataSource(labels=labels, images=tmp_path))


# -- finding 9: temporary names --------------------------------------------------------------------------------


def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "victim.txt"
    victim.write_text("my important notes")
    return victim


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name or p.name.endswith(".partial"))


def _keras_archive(path: Path, value: float = 1.0) -> None:
    h5py = pytest.importorskip("h5py", reason="needs h5py (extra: train)")
    import zipfile

    import numpy as np

    weights = io.BytesIO()
    with h5py.File(weights, "w") as f:
        f.create_dataset("layers/dense/vars/0", data=np.full((64, 32), value, np.float32))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("metadata.json", "{}")
        archive.writestr("model.weights.h5", weights.getvalue())


def test_halving_never_writes_through_a_link_named_like_its_temporary(tmp_path: Path) -> None:
    from boneage.export.halve import halve_keras

    out = tmp_path / "out"
    out.mkdir()
    victim = _victim(tmp_path)
    keras = out / "probe-9.9.9.keras"
    _keras_archive(keras)
    (out / "probe-9.9.9.keras.partial").symlink_to(victim)
    mine = out / "probe-9.9.10.keras.partial"
    mine.write_text("user's own file")
    halve_keras(keras)
    assert victim.read_text() == "my important notes" and mine.read_text() == "user's own file"
    assert not keras.is_symlink() and keras.stat().st_size > 64 * 32 * 2
    assert _leftovers(out) == ["probe-9.9.10.keras.partial", "probe-9.9.9.keras.partial"]


def test_a_failed_halving_leaves_no_temporary_and_the_archive_whole(tmp_path: Path) -> None:
    from boneage.export.halve import halve_keras

    keras = tmp_path / "m.keras"
    _keras_archive(keras, 1e6)  # beyond float16's range: refused
    before = keras.read_bytes()
    with pytest.raises(ValueError, match="float16"):
        halve_keras(keras)
    assert keras.read_bytes() == before and not _leftovers(tmp_path)


def test_run_state_never_writes_through_a_link_named_like_its_temporary(tmp_path: Path) -> None:
    pytest.importorskip("pydantic")
    from boneage.training.state import write_state

    victim = _victim(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "state.json.tmp").symlink_to(victim)
    write_state(run, {"epoch": 1})
    assert victim.read_text() == "my important notes" and not (run / "state.json").is_symlink()
    assert (run / "state.json").read_text().startswith("{") and _leftovers(run) == ["state.json.tmp"]
    umask = os.umask(0o022)
    os.umask(umask)
    # the mode a new file gets (mkstemp's 0600 would be kept by state.json)
    assert (run / "state.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_checkpoint_never_writes_through_a_link_named_like_its_temporary(tmp_path: Path) -> None:
    pytest.importorskip("keras", reason="needs keras (extra: train)")
    from boneage.training.train import save_model

    class Model:
        def save(self, path: Any) -> None:
            Path(path).write_bytes(b"PK weights")

    victim = _victim(tmp_path)
    (tmp_path / ".best.tmp.keras").symlink_to(victim)
    save_model(Model(), tmp_path / "best.keras")
    assert victim.read_text() == "my important notes" and (tmp_path / "best.keras").read_bytes() == b"PK weights"
    assert _leftovers(tmp_path) == [".best.tmp.keras"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    from boneage.whole import write_whole

    path = tmp_path / "best.keras"
    path.write_bytes(b"old")

    def fail(temporary: Path) -> None:
        temporary.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_whole(path, fail)
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["best.keras"]


# -- finding 10: --resume of a Parquet file ------------------------------------------------------------------------


def _parquet(path: Path, rows: int, value: str = "x.png", **write: Any) -> Path:
    pa = pytest.importorskip("pyarrow", reason="needs pyarrow (extra: parquet)")
    import pyarrow.parquet as pq

    from boneage.cli.results import parquet_schema

    schema = parquet_schema(pa)
    columns = {f.name: pa.nulls(rows, f.type) if f.name != "source" else pa.repeat(pa.scalar(value), rows)
               for f in schema}
    pq.write_table(pa.table(columns, schema=schema), path, compression="zstd", **write)
    return path


@pytest.fixture
def no_reading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any read of a Parquet file's columns fails the test: a refusal must come from the metadata."""
    pq = pytest.importorskip("pyarrow.parquet", reason="needs pyarrow (extra: parquet)")

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the columns were read")

    for name in ("read", "iter_batches"):
        monkeypatch.setattr(pq.ParquetFile, name, refuse)
    monkeypatch.setattr(pq, "read_table", refuse)


def test_a_long_parquet_file_is_resumed_and_rewritten_a_batch_at_a_time(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # read whole, 20 M repeated rows in 1.2 MB took 4 GB (exit 70); a bound on rows refused real long runs
    pq = pytest.importorskip("pyarrow.parquet", reason="needs pyarrow (extra: parquet)")

    import boneage.cli.results as results

    monkeypatch.setattr(results, "RESUME_BATCH_ROWS", 1000)
    batches: list[int] = []
    read = results.parquet_batches

    def spy(where: Path, columns: tuple[str, ...]) -> Iterator[Any]:
        for rows in read(where, columns):
            batches.append(len(rows))
            yield rows

    monkeypatch.setattr(results, "parquet_batches", spy)
    path = _parquet(tmp_path / "r.parquet", 25_000)
    output = results.ResultFile(path, resume=True, force=False)
    assert output.done == {"x.png": 25_000} and max(batches) == 1000
    output.write([{"source": "y.png", "bone_age_months": 100.0}])
    output.close()
    assert pq.read_metadata(path).num_rows == 25_001 and max(batches) == 1000


def test_one_long_value_stored_once_for_every_row_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import boneage.cli.results as results

    # 1,000 rows of one 10 MB name take 816 bytes and spelled out 10 GB: here 200 rows of 100 KB against 1 MiB
    monkeypatch.setattr(results, "MAX_RESUME_BYTES", 1 << 20)
    path = _parquet(tmp_path / "r.parquet", 200, "x" * 100_000)
    assert path.stat().st_size < 20_000
    with pytest.raises(InputError, match="holds more than 1 MiB of results in one place"):
        results.ResultFile(path, resume=True, force=False)


def test_a_column_chunk_that_decompresses_past_the_bound_is_refused_from_the_metadata(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_reading: None) -> None:
    import boneage.cli.results as results

    monkeypatch.setattr(results, "MAX_RESUME_BYTES", 1 << 20)
    path = _parquet(tmp_path / "r.parquet", 200, "x" * 100_000, use_dictionary=False)  # 20 MB plain, zstd
    with pytest.raises(InputError, match="holds more than 1 MiB of results in one place"):
        results.ResultFile(path, resume=True, force=False)


def test_resume_reads_only_the_columns_it_needs_and_types_memory_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import boneage.cli.results as results

    path = _parquet(tmp_path / "r.parquet", 3)
    read: list[tuple[str, ...]] = []
    batches = results.parquet_batches

    def spy(where: Path, columns: tuple[str, ...]) -> Iterator[Any]:
        read.append(columns)
        return batches(where, columns)

    monkeypatch.setattr(results, "parquet_batches", spy)
    done = results.ResultFile(path, resume=True, force=False)
    done.close()
    assert done.done == {"x.png": 3} and read == [("source", "error_type", "model_name", "model_version"), COLUMNS]

    def out_of_memory(*args: Any) -> Iterator[list[dict[str, Any]]]:
        raise MemoryError
        yield []

    monkeypatch.setattr(results, "parquet_batches", out_of_memory)
    with pytest.raises(InputError, match="too large to read back into memory"):
        results.ResultFile(path, resume=True, force=False)
    monkeypatch.setattr(results, "complete_records", out_of_memory)
    (tmp_path / "r.csv").write_text("x\n")
    with pytest.raises(InputError, match="too large to read back into memory"):
        results.ResultFile(tmp_path / "r.csv", resume=True, force=False)


def test_a_parquet_column_of_another_type_is_not_results(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="needs pyarrow (extra: parquet)")
    import pyarrow.parquet as pq

    from boneage.cli.results import ResultFile

    path = tmp_path / "r.parquet"
    pq.write_table(pa.table({"source": pa.array([["x.png"]] * 3)}), path)
    with pytest.raises(InputError, match="not a results file of this command: its column 'source' holds list"):
        ResultFile(path, resume=True, force=False)


def test_predict_resume_onto_a_parquet_bomb_is_exit_2(tiny_model: Path, radiograph_png: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str], no_reading: None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import boneage.cli.results as results

    monkeypatch.setattr(results, "MAX_RESUME_BYTES", 1 << 20)
    path = _parquet(tmp_path / "r.parquet", 200, "x" * 100_000, use_dictionary=False)
    assert main(["predict", str(radiograph_png), "--sex", "f", "--model", str(tiny_model), "--output", str(path),
                 "--resume"]) == 2
    assert "more than 1 MiB of results in one place" in capsys.readouterr().err
