"""The columns of a CSV a user wrote, matched as spreadsheets write them: stripped and
case-insensitively (``" Sex"``, ``SEX``), each at most once; each row with its line number and the
count of cells it holds past the header's."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass


class DuplicateColumnError(ValueError):
    """Two header cells name the same column."""


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


def numbered_rows(reader: csv.DictReader[str]) -> list[Row]:
    """Every row with its columns stripped and lower-cased. Two columns that match alike raise
    :class:`DuplicateColumnError` naming the column, not its values: the last one silently won, so
    a list with ``sex`` and ``Sex`` scored children with the other column's sex."""
    def key(name: str | None) -> str:
        return (name or "").strip().lower()

    keys = [key(name) for name in reader.fieldnames or ()]
    twice = sorted({k for k in keys if k and keys.count(k) > 1})
    if twice:
        raise DuplicateColumnError(f"two columns are named {twice[0]!r} (names are matched without case or spaces)")
    rows = []
    for row in reader:  # reader.restkey (None) holds the cells past the header's
        extra = row.pop(None, None) or []
        rows.append(Row({key(name): value for name, value in row.items()}, reader.line_num, len(extra)))
    return rows


def csv_rows(data: bytes) -> list[Row]:
    """:func:`numbered_rows` of a CSV file's bytes, UTF-8 with or without a byte-order mark (as
    spreadsheets save it); raises ``UnicodeDecodeError``, ``csv.Error`` or :class:`DuplicateColumnError`,
    for the caller to say which file it was."""
    return numbered_rows(csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline="")))
