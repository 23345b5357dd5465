"""The columns of a CSV a user wrote, matched as spreadsheets write them: stripped and
case-insensitively (``" Sex"``, ``SEX``), each at most once."""

from __future__ import annotations

import csv


class DuplicateColumnError(ValueError):
    """Two header cells name the same column."""


def keyed_rows(reader: csv.DictReader[str]) -> list[dict[str, str | None]]:
    """Every row with its columns stripped and lower-cased. Two columns that match alike raise
    :class:`DuplicateColumnError` naming the column, not its values: the last one silently won, so
    a list with ``sex`` and ``Sex`` scored children with the other column's sex."""
    keys = [(name or "").strip().lower() for name in reader.fieldnames or ()]
    twice = sorted({key for key in keys if key and keys.count(key) > 1})
    if twice:
        raise DuplicateColumnError(f"two columns are named {twice[0]!r} (names are matched without case or spaces)")
    return [{(key or "").strip().lower(): value for key, value in row.items()} for row in reader]
