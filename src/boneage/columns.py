"""The columns of a CSV a user wrote, matched as spreadsheets write them: stripped and
case-insensitively (``" Sex"``, ``SEX``), each at most once; each row with its line number and the
count of cells it holds past the header's."""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass

MAX_COLUMNS = 1000
"""The most columns a header may name. A list needs path, sex and an age (or dob and study_date), a
labels file id, boneage and male; a spreadsheet's own columns beside them are a few tens. A header
wider than this is not such a file, and every row is read into a cell per column: 40,000 columns took
18 s to check for duplicates (probe 15), and over short rows each line of two bytes became a dict of
every column (a 45 KB file took 1.7 GB at 1,000 columns, before :data:`MAX_MISSING_CELLS`)."""

MISSING_PER_HELD = 4
MAX_MISSING_CELLS = 1_000_000
"""Rows shorter than the header are filled with None for the columns they lack, a stored cell each, so
all together they may lack at most :data:`MISSING_PER_HELD` cells for every cell they hold, plus this
many: memory then follows the file's size (a cell takes at least a byte), and a file of five columns
or fewer is never refused."""


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


def numbered_rows(reader: csv.DictReader[str]) -> list[Row]:
    """Every row with its columns stripped and lower-cased, once :func:`check_header` passed its header.
    Rows that lack far more cells than they hold (:data:`MAX_MISSING_CELLS`) raise :class:`ColumnsError`
    as soon as they do."""
    keys = [_key(name) for name in reader.fieldnames or ()]
    check_header(keys)
    rows: list[Row] = []
    held = missing = 0
    for row in reader:  # reader.restkey (None) holds the cells past the header's; restval (None) fills a short row
        extra = row.pop(None, None) or []
        short = sum(value is None for value in row.values())
        held, missing = held + len(row) - short + len(extra), missing + short
        if missing > MISSING_PER_HELD * held + MAX_MISSING_CELLS:
            raise ColumnsError(f"its rows lack {missing:,} cells, far more than the {held:,} they hold (its header "
                               f"names {len(keys):,} columns): give every row a cell for each column (an empty "
                               "one will do), or remove the columns they leave out")
        rows.append(Row({_key(name): value for name, value in row.items()}, reader.line_num, len(extra)))
    return rows


def csv_rows(data: bytes) -> list[Row]:
    """:func:`numbered_rows` of a CSV file's bytes, UTF-8 with or without a byte-order mark (as
    spreadsheets save it); raises ``UnicodeDecodeError``, ``csv.Error`` or :class:`ColumnsError`,
    for the caller to say which file it was."""
    return numbered_rows(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))
