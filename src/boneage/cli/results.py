"""Results streamed to a file as they are made, so an interruption loses nothing and ``--resume``
picks up where it stopped, trying again the inputs that failed. The format follows the suffix:
``.csv``, ``.jsonl`` or ``.parquet``.

CSV and JSON Lines are appended and flushed after every batch. Parquet cannot be appended to, so
its rows go first to a journal beside it (``NAME.parquet.partial.jsonl``) and become the Parquet
file, written whole and renamed into place, when the run ends or is interrupted; a run killed
outright leaves the journal, which ``--resume`` reads.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from boneage.errors import InputError, MissingDependencyError
from boneage.files import lookup_errors
from boneage.rows import COLUMNS, ERROR_TYPE, NUMBERS, csv_row, unescaped_text
from boneage.rows import flat as flat  # re-exported: its home before rows.py
from boneage.whole import write_whole

MODEL_NAME, MODEL_VERSION = COLUMNS.index("model_name"), COLUMNS.index("model_version")
FORMATS = (".csv", ".jsonl", ".parquet")


def complete_lines(path: Path) -> tuple[str, int]:
    """The file's text up to its last newline (a line cut short by a kill is left out), and that
    length in bytes. Nothing is written here: a file is only cut once it is known to be ours."""
    if not path.is_file():
        raise InputError(f"--resume: {path} is not a regular file")
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    return complete.decode("utf-8", errors="surrogateescape"), len(complete)


def complete_records(path: Path) -> tuple[list[list[str]], int]:
    """The CSV file's records up to the end of the last one written whole, and that length in bytes. A
    cell may hold a newline (a file or model name), so the cut is at a record's end, not a line's: cutting
    at the last newline left a row cut inside such a cell, of one cell ("list index out of range", probe 13).
    A last record without its line end, or cut inside a quoted cell, is left out; a malformed one
    before it is a ``csv.Error``. Nothing is written here (see :func:`complete_lines`)."""
    if not path.is_file():
        raise InputError(f"--resume: {path} is not a regular file")
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    consumed, ended = 0, False

    def lines() -> Iterator[str]:
        nonlocal consumed, ended
        for line in io.StringIO(text, newline=""):  # "\r\n", "\n" and "\r" end lines, as the csv module wants
            consumed += len(line)
            yield line
        ended = True

    records: list[list[str]] = []
    end = 0
    reader = csv.reader(lines(), strict=True)
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error:
            if ended:  # the file ends inside a quoted cell: a record cut short
                break
            raise
        if text[consumed - 1 : consumed] != "\n":  # its line end, "\r\n", not written whole
            break
        if record:  # a blank line, skipped by every reader: kept, it cost 70 bytes of memory per byte of file
            records.append(record)
        end = consumed
    return records, len(text[:end].encode("utf-8", errors="surrogateescape"))


def cut_to(path: Path, length: int) -> None:
    """Truncate the file to ``length`` bytes, dropping a line cut short by a kill before appending after it."""
    if path.stat().st_size != length:
        with path.open("r+b") as f:
            f.truncate(length)


def _parquet() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise MissingDependencyError(f'--output *.parquet needs pyarrow: pip install "boneage[parquet]" ({exc})') from exc
    return pa, pq


def stored_text(value: str) -> str:
    """Text as a Parquet string column holds it: valid UTF-8, so the bytes of a file name that is
    not UTF-8 (which Python keeps as lone surrogates) are written as ``\\xNN`` escapes (pyarrow
    refused the whole file: an internal error, exit 70, sixth probe). CSV and JSON Lines keep them."""
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file name holds
        return value.encode("utf-8", "backslashreplace").decode("utf-8")


def parquet_schema(pa: Any) -> Any:
    """The Parquet schema of :data:`COLUMNS`: numbers as float64, everything else as strings, so that every batch
    and an earlier file share one schema even where a column is all None."""
    return pa.schema([(c, pa.float64() if c in NUMBERS else pa.string()) for c in COLUMNS])


RESUME_BATCH_ROWS = 65_536
"""Rows read back from an earlier Parquet file at a time, by ``--resume`` and by the rewrite at the end:
memory follows a batch, not the file (Parquet stores repeated rows in a few bytes: 20 million in 1.2 MB
took 4 GB and ended in ``MemoryError`` when read whole), and a run of any length can be continued."""
MAX_RESUME_BYTES = 1 << 30
"""The most bytes one column of one row group may take decompressed (from the file's metadata, before it
is read), and one batch's text spelled out row by row: a value stored once in a dictionary may stand for
every row (1,000 rows of one 10 MB name took 816 bytes)."""


def parquet_batches(path: Path, columns: tuple[str, ...]) -> Iterator[Any]:
    """The rows of the Parquet file at ``path`` as Arrow record batches of :data:`RESUME_BATCH_ROWS`, with those of
    ``columns`` (of :data:`COLUMNS`) it holds; text read as dictionaries (each value once), its size checked.
    Refused (:class:`InputError`) where a column chunk or a batch's text passes :data:`MAX_RESUME_BYTES`, and
    where a column holds another type (a list, a struct): not this command's."""
    pa, pq = _parquet()
    schema = pq.read_schema(path)
    present = [c for c in columns if c in schema.names]
    for column in present:
        kind = schema.field(column).type
        if not (pa.types.is_null(kind) or (_number(pa, kind) if column in NUMBERS else _text(pa, kind))):
            raise InputError(f"--resume: {path} is not a results file of this command: its column {column!r} "
                             f"holds {kind}")
    too_large = InputError(f"--resume: {path} holds more than {MAX_RESUME_BYTES >> 20:,} MiB of results in one "
                           "place, more than a run writes: continue into another --output file")
    with pq.ParquetFile(path, read_dictionary=[c for c in present if c not in NUMBERS]) as file:
        meta = file.metadata
        for group in (meta.row_group(i) for i in range(meta.num_row_groups)):
            if any(group.column(i).total_uncompressed_size > MAX_RESUME_BYTES for i in range(group.num_columns)
                   if group.column(i).path_in_schema in present):
                raise too_large
        for batch in file.iter_batches(batch_size=RESUME_BATCH_ROWS, columns=present):
            if _text_bytes(pa, batch.columns) > MAX_RESUME_BYTES:
                raise too_large
            yield batch


def _number(pa: Any, kind: Any) -> bool:
    return bool(pa.types.is_floating(kind) or pa.types.is_integer(kind))


def _text(pa: Any, kind: Any) -> bool:
    """A column of text, or of text read as a dictionary."""
    kind = kind.value_type if pa.types.is_dictionary(kind) else kind
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def _text_bytes(pa: Any, arrays: list[Any]) -> int:
    """The bytes of the arrays' text as Python will hold it: each row's value, not each dictionary entry once."""
    import pyarrow.compute as pc

    total = 0
    for chunk in arrays:
        if pa.types.is_dictionary(chunk.type):
            total += pc.sum(pc.take(pc.binary_length(chunk.dictionary), chunk.indices)).as_py() or 0
        elif _text(pa, chunk.type):
            total += pc.sum(pc.binary_length(chunk)).as_py() or 0
    return total


class ResultFile:
    """Appends one line per result and flushes after each batch (see the module's docstring)."""

    def __init__(self, path: Path, *, resume: bool, force: bool) -> None:
        """An existing, non-empty ``path`` is an :class:`InputError` unless ``resume`` (keep it, and skip
        the inputs in :attr:`done`) or ``force`` (replace it); so is an unknown suffix."""
        self.path, self.suffix = path, path.suffix.lower()
        if self.suffix not in FORMATS:
            raise InputError(f"--output {path}: the suffix must be one of {', '.join(FORMATS)}")
        self.journal = path.with_name(path.name + ".partial.jsonl") if self.suffix == ".parquet" else path
        if self.suffix == ".parquet":
            _parquet()  # a missing extra is said before any work
        with lookup_errors(InputError, f"cannot write {path}"):
            for target in {path, self.journal}:
                if target.is_symlink():  # even a dangling one: results were written through to where it led
                    raise InputError(f"--output {target} is a symbolic link: give the file it stands for")
                if target.exists() and not target.is_file():
                    raise InputError(f"--output {target} exists and is not a regular file")
            exists = any(p.exists() and p.stat().st_size > 0 for p in {path, self.journal})
        if exists and not (resume or force):
            raise InputError(f"--output {path} exists: add --resume to continue it or --force to replace it")
        self.models: set[tuple[Any, Any]] = set()  # (model_name, model_version) of the answers read back
        self.done: Counter[str] = self._read_done() if exists and resume else Counter()  # see answered()
        append = exists and resume
        if not append and self.suffix == ".parquet" and path.exists():
            path.unlink()  # --force
        try:
            # surrogateescape: a file name that is not UTF-8 is written back byte for byte
            self._file: IO[str] = self.journal.open("a" if append else "w", newline="", encoding="utf-8",
                                                    errors="surrogateescape")
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
        self._csv = csv.DictWriter(self._file, COLUMNS) if self.suffix == ".csv" else None
        if self._csv is not None and not append:
            self._csv.writeheader()

    def _read_done(self) -> Counter[str]:
        """How many times each source was answered; those that failed are tried again (the file may
        then hold an error row and, after it, the answer). Counted, because a list may name one image
        twice (another sex or age): one answer covers one of them. The file is checked to be this
        command's results (same columns) before a line cut short by a kill is cut off it."""
        earlier = self._parquet_done()  # read before the journal is cut: it may not be results
        try:
            if self.suffix == ".csv":
                records, length = complete_records(self.path)
                if records[:1] != [list(COLUMNS)]:
                    raise InputError(f"--resume: {self.path} is not a results file of this version of boneage "
                                     "(its columns differ)")
                for number, row in enumerate(records[1:], 2):
                    if len(row) != len(COLUMNS):
                        raise InputError(f"--resume: record {number} of {self.path} has {len(row)} cells, not "
                                         f"{len(COLUMNS)}: not a results file of this command")
                # a source was written escaped (rows.spreadsheet_text): "'=1+2.png" stands for "=1+2.png"
                answers = [row for row in records[1:] if not row[ERROR_TYPE]]
                done = Counter(unescaped_text(row[0]) for row in answers)
                self.models |= {(unescaped_text(row[MODEL_NAME]), unescaped_text(row[MODEL_VERSION])) for row in answers}
                cut_to(self.path, length)
                return done
            lines, length = self._journal_lines()
            done = self._answered_in(lines)
            if self.journal.exists():
                cut_to(self.journal, length)
            return done + earlier
        except MemoryError as exc:  # a CSV or JSON Lines file larger than memory: its rows follow its bytes
            raise self._too_large() from exc
        except (ValueError, KeyError, IndexError, TypeError, csv.Error, OSError, RecursionError) as exc:
            raise InputError(f"--resume: cannot read the results in {self.path}: {exc}") from exc

    def _too_large(self) -> InputError:
        return InputError(f"--resume: {self.path} is too large to read back into memory: continue into another "
                          "--output file")

    def answered(self, source: str) -> bool:
        """Whether ``--resume`` found ``source`` answered (a Parquet file holds it as ``stored_text``);
        each answer found covers one input of that name."""
        for key in (source, stored_text(source)) if self.suffix == ".parquet" else (source,):
            if self.done[key] > 0:
                self.done[key] -= 1
                return True
        return False

    def _answered_in(self, lines: Iterator[str]) -> Counter[str]:
        """The sources JSON Lines (or the journal) answered, their models noted in :attr:`models`."""
        done: Counter[str] = Counter()
        for row in map(self._row, lines):
            if not (row.get("error") or row.get("error_type")):
                done[row["source"]] += 1
                self.models.add((row.get("model_name"), row.get("model_version")))
        return done

    @staticmethod
    def _row(line: str) -> dict[str, Any]:
        """The line's row (it failed where it has an error in JSON Lines, an error_type in the journal)."""
        row = json.loads(line)
        if not isinstance(row, dict) or not isinstance(row.get("source"), str):
            raise InputError("--resume: a line without a source: not a results file of this command")
        return row

    def _journal_lines(self) -> tuple[Iterator[str], int]:
        """The journal's complete lines but blank ones, read as they are used (a list of them took 70 bytes
        per blank line's byte), and the length they end at."""
        if not self.journal.exists():
            return iter(()), 0
        text, length = complete_lines(self.journal)
        return (line for line in io.StringIO(text, newline="\n") if line.strip()), length

    def _parquet_done(self) -> Counter[str]:
        """The sources the earlier Parquet file holds answers for, and their models; only those columns are read."""
        done: Counter[str] = Counter()
        for batch in self._parquet_batches(("source", "error_type", "model_name", "model_version")):
            rows = batch.to_pylist()
            if rows and "source" not in rows[0]:
                raise InputError(f"--resume: {self.path} has no source column: not a results file of this command")
            answers = [row for row in rows if not row.get("error_type")]
            done.update(row["source"] for row in answers)
            self.models |= {(row.get("model_name"), row.get("model_version")) for row in answers}
        return done

    def _parquet_batches(self, columns: tuple[str, ...] = COLUMNS) -> Iterator[Any]:
        """The earlier Parquet file's rows, a batch at a time (:func:`parquet_batches`), none if there is no
        such file; its errors typed, memory running out too (it was ``MemoryError``, exit 70)."""
        if self.suffix != ".parquet" or not self.path.exists():
            return
        pa, _ = _parquet()
        try:
            yield from parquet_batches(self.path, columns)
        except InputError:
            raise
        except MemoryError as exc:
            raise self._too_large() from exc
        except (pa.ArrowException, OSError, ValueError) as exc:  # ValueError: text that is not UTF-8
            raise InputError(f"--resume: {self.path} is not a readable Parquet file: {exc}") from exc

    def write(self, results: list[dict[str, Any]]) -> None:
        """Append one batch of results and fsync it, so that a kill after this loses none of them."""
        for result in results:
            if self._csv is not None:
                self._csv.writerow(csv_row(flat(result)))  # no cell a spreadsheet would run as a formula
            elif self.suffix == ".parquet":
                self._file.write(json.dumps(flat(result), allow_nan=False) + "\n")
            else:
                self._file.write(json.dumps(result, allow_nan=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the file; for Parquet, write the whole file from the journal. A full disk is an
        :class:`~boneage.errors.InputError` and leaves the journal for ``--resume``."""
        try:
            self._file.close()
            if self.suffix == ".parquet":
                self._to_parquet()
        except OSError as exc:  # a full disk: typed, and what was journalled stays for --resume
            raise InputError(f"cannot write {self.path}: {exc.strerror or exc}") from exc

    def _to_parquet(self) -> None:
        """The earlier Parquet file's rows, copied a batch at a time as Arrow holds them (its text is already
        as :func:`stored_text` leaves it), then the journal's, written to a new file renamed in place (a fixed
        "NAME.writing" replaced the user's own file of that name, or wrote through a link)."""
        pa, pq = _parquet()
        schema = parquet_schema(pa)

        def earlier(batch: Any) -> Any:  # the schema's columns, a column an older file lacks as nulls
            return pa.Table.from_arrays([batch.column(f.name).cast(f.type) if f.name in batch.schema.names
                                         else pa.nulls(batch.num_rows, f.type) for f in schema], schema=schema)

        def write(partial: Path) -> None:
            journal = [json.loads(line) for line in self._journal_lines()[0]]
            with pq.ParquetWriter(partial, schema) as writer:
                for batch in self._parquet_batches():
                    writer.write_table(earlier(batch))
                writer.write_table(pa.Table.from_pylist(
                    [{k: stored_text(v) if isinstance(v, str) else v for k, v in row.items()} for row in journal],
                    schema=schema))

        write_whole(self.path, write)
        self.journal.unlink()
