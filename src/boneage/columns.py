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
    def key(name: str | None) -> str:
        return (name or "").strip().lower()

    keys = [key(name) for name in reader.fieldnames or ()]
    twice = sorted({k for k in keys if k and keys.count(k) > 1})
    if twice:
        raise DuplicateColumnError(f"two columns are named {twice[0]!r} (names are matched without case or spaces)")
    return [{key(name): value for name, value in row.items()} for row in reader]
