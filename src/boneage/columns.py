"""The columns of a CSV a user wrote, matched as spreadsheets write them: stripped and
case-insensitively (``" Sex"``, ``SEX``), each at most once; each row with its line number and the
count of cells it holds past the header's."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

MAX_COLUMNS = 1000
"""The most columns a header may name. A list needs path, sex and an age (or dob and study_date), a
labels file id, boneage and male; a spreadsheet's own columns beside them are a few tens. A header
wider than this is not such a file, and every row is read into a cell per column: 40,000 columns took
18 s to check for duplicates (probe 15), and over short rows each line of two bytes became a dict of
every column (a 45 KB file took 1.7 GB at 1,000 columns, before :data:`MAX_CELLS`)."""

MAX_CELLS = 20_000_000
"""The most cells all rows together may take, a short row's missing ones too (each is stored, as None):
a list of a million radiographs with six columns takes 6 M. Memory then follows this bound, not the
file: over short rows each line of two bytes became a dict of every column (a 45 KB file took 1.7 GB at
1,000 columns), and rows a fifth full as much per byte (probe 15's review)."""

MAX_LINE_DELIMITERS = 4 * MAX_COLUMNS
"""The most commas one line may hold, counted before the CSV reader splits it: it builds a row's whole
list of cells first (a header of 10 M columns took 921 MB before its width was refused)."""


class ColumnsError(ValueError):
    """A CSV whose columns cannot be read: two header cells name the same column, the header names more
    than :data:`MAX_COLUMNS`, or its rows lack far more cells than they hold. The message names no
    cell's value; the caller says which file."""



@dataclass(frozen=True)
class Row:
    """One row of a CSV: its cells by column key (None where the row is short), the line it ends on
    (the header is line 1; a quoted cell may span lines), and how many cells it holds past the
    header's (``10y,3m`` typed without quotes: csv.DictReader kept them aside, and they were dropped
    without a word)."""

    cells: dict[str, str | None]
    line: int
    extra: int = 0

    @property
    def blank(self) -> bool:
        """Every cell empty or spaces: a line of blanks, or of commas."""
        return not self.extra and not any((cell or "").strip() for cell in self.cells.values())


def _key(name: str | None) -> str:
    return (name or "").strip().lower()


def check_header(keys: list[str]) -> None:
    """Refuse a header of more than :data:`MAX_COLUMNS` columns, or two columns that match alike
    (:class:`ColumnsError` naming the column, not its values): the last one silently won, so a list
    with ``sex`` and ``Sex`` scored children with the other column's sex. Counted once each: a count
    per column made a wide header quadratic."""
    if len(keys) > MAX_COLUMNS:
        raise ColumnsError(f"its header names {len(keys):,} columns, more than {MAX_COLUMNS:,}: a list names "
                           "path, sex and age, a labels file id, boneage and male (is its first line the header?)")
    twice = sorted(k for k, count in Counter(keys).items() if k and count > 1)
    if twice:
        raise ColumnsError(f"two columns are named {twice[0]!r} (names are matched without case or spaces)")


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` for the CSV reader, each refused past :data:`MAX_LINE_DELIMITERS` commas."""
    for line in io.StringIO(text, newline=""):
        if line.count(",") > MAX_LINE_DELIMITERS:
            raise ColumnsError(f"a line holds more than {MAX_LINE_DELIMITERS:,} commas: a list names path, sex and "
                               "age, a labels file id, boneage and male")
        yield line


def numbered_rows(reader: csv.DictReader[str]) -> list[Row]:
    """Every row with its columns stripped and lower-cased (each key made once), once :func:`check_header`
    passed its header; more than :data:`MAX_CELLS` cells in all raise :class:`ColumnsError` as soon as
    they come."""
    names = list(reader.fieldnames or ())
    keys = [_key(name) for name in names]
    check_header(keys)
    rows: list[Row] = []
    cells = 0
    for row in reader:  # reader.restkey (None) holds the cells past the header's; restval (None) fills a short row
        extra = row.pop(None, None) or []
        cells += len(keys) + len(extra)
        if cells > MAX_CELLS:
            raise ColumnsError(f"its rows hold more than {MAX_CELLS:,} cells ({len(keys):,} columns, a short row's "
                               "missing cells counted): more than a list of radiographs or a labels file needs")
        rows.append(Row({key: row[name] for key, name in zip(keys, names, strict=True)}, reader.line_num, len(extra)))
    return rows


def csv_rows(data: bytes) -> list[Row]:
    """:func:`numbered_rows` of a CSV file's bytes, UTF-8 with or without a byte-order mark (as
    spreadsheets save it); raises ``UnicodeDecodeError``, ``csv.Error`` or :class:`ColumnsError`,
    for the caller to say which file it was."""
    return numbered_rows(csv.DictReader(_lines(data.decode("utf-8-sig"))))
