"""The plain-text tables every command prints."""

from __future__ import annotations

from collections.abc import Sequence

from boneage.errors import printable


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, trailing blanks trimmed, control characters escaped."""
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)
