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
import stat
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from boneage.errors import InputError, MissingDependencyError
from boneage.files import lookup_errors
from boneage.rows import COLUMNS, ERROR_TYPE, NUMBERS, csv_row, unescaped_text
from boneage.rows import flat as flat  # re-exported: its home before rows.py

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
        try:
            if self.suffix == ".csv":
                records, length = complete_records(self.path)
                if records[:1] != [list(COLUMNS)]:
                    raise InputError(f"--resume: {self.path} is not a results file of this version of boneage "
                                     "(its columns differ)")
                for number, row in enumerate(records[1:], 2):
                    if row and len(row) != len(COLUMNS):
                        raise InputError(f"--resume: record {number} of {self.path} has {len(row)} cells, not "
                                         f"{len(COLUMNS)}: not a results file of this command")
                # a source was written escaped (rows.spreadsheet_text): "'=1+2.png" stands for "=1+2.png"
                done = Counter(unescaped_text(row[0]) for row in records[1:] if row and not row[ERROR_TYPE])
                cut_to(self.path, length)
                return done
            lines, length = self._journal_lines()
            done = Counter(source for source, failed in map(self._source, lines) if not failed)
            if self.journal.exists():
                cut_to(self.journal, length)
            return done + Counter(r["source"] for r in self._parquet_rows() if not r.get("error_type"))
        except (ValueError, KeyError, IndexError, TypeError, csv.Error, OSError, RecursionError) as exc:
            raise InputError(f"--resume: cannot read the results in {self.path}: {exc}") from exc

    def answered(self, source: str) -> bool:
        """Whether ``--resume`` found ``source`` answered (a Parquet file holds it as ``stored_text``);
        each answer found covers one input of that name."""
        for key in (source, stored_text(source)) if self.suffix == ".parquet" else (source,):
            if self.done[key] > 0:
                self.done[key] -= 1
                return True
        return False

    @staticmethod
    def _source(line: str) -> tuple[str, bool]:
        """The line's source, and whether it failed (an error in JSON Lines, an error_type in the journal)."""
        row = json.loads(line)
        if not isinstance(row, dict) or not isinstance(row.get("source"), str):
            raise InputError("--resume: a line without a source: not a results file of this command")
        return str(row["source"]), bool(row.get("error") or row.get("error_type"))

    def _journal_lines(self) -> tuple[list[str], int]:
        if not self.journal.exists():
            return [], 0
        text, length = complete_lines(self.journal)
        return [line for line in text.splitlines() if line.strip()], length

    def _parquet_rows(self) -> list[dict[str, Any]]:
        if self.suffix != ".parquet" or not self.path.exists():
            return []
        pa, pq = _parquet()
        try:
            return list(pq.read_table(self.path).to_pylist())
        except (pa.ArrowException, OSError) as exc:
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
        """The rows of an earlier Parquet file and the journal, written whole, then renamed in place."""
        pa, pq = _parquet()
        rows = self._parquet_rows() + [json.loads(line) for line in self._journal_lines()[0]]
        rows = [{k: stored_text(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows]
        # a name no file had (O_EXCL): a fixed "NAME.writing" replaced the user's own file of that name,
        # and, if it was a link, wrote through it
        handle, partial = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".writing", dir=self.path.parent)
        os.close(handle)
        try:
            pq.write_table(pa.Table.from_pylist(rows, schema=parquet_schema(pa)), partial)
            # mkstemp makes it 0600: the mode of the file it replaces, else the journal's, which open() made
            # as it makes a CSV or JSON Lines file (0644 under umask 022), so the results are as readable
            os.chmod(partial, stat.S_IMODE(os.stat(self.path if self.path.exists() else self.journal).st_mode))
            os.replace(partial, self.path)
        finally:
            if os.path.exists(partial):
                os.unlink(partial)
        self.journal.unlink()
