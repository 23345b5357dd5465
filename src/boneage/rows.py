"""One flat row per result, as every results file and engine writes it: the columns, which of them
are numbers, and :func:`flat`, which turns a prediction's (or a failure's) dict into a row; and
:func:`csv_row`, the row as a CSV file holds it, safe to open in a spreadsheet.

A record of its own, below both the CLI's result files (:mod:`boneage.cli.results`) and the engines
(:mod:`boneage.engines.ray`), so an engine's rows match ``boneage predict --output`` without the
engine importing the CLI.
"""

from __future__ import annotations

from typing import Any

COLUMNS = ("source", "sex", "bone_age_months", "bone_age_years", "interval_low_months", "interval_high_months",
           "interval_level", "chronological_age_months", "bone_age_minus_age_months", "sds", "category",
           "model_name", "model_version", "runtime", "warnings", "notes", "error_type", "error")
NUMBERS = {"bone_age_months", "bone_age_years", "interval_low_months", "interval_high_months", "interval_level",
           "chronological_age_months", "bone_age_minus_age_months", "sds"}
ERROR_TYPE = COLUMNS.index("error_type")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet may read as the start of a formula


def flat(result: dict[str, Any]) -> dict[str, Any]:
    """One row: lists joined with '; ', the error split into its type and message, None where empty."""
    row: dict[str, Any] = {c: result.get(c) for c in COLUMNS}
    if "male" in result:
        row["sex"] = "male" if result["male"] else "female"
    interval = result.get("interval") or {}
    row["interval_low_months"], row["interval_high_months"] = interval.get("low_months"), interval.get("high_months")
    row["interval_level"] = interval.get("level")
    comparison = result.get("comparison") or {}
    for key in ("chronological_age_months", "bone_age_minus_age_months", "sds", "category"):
        row[key] = comparison.get(key)
    row["warnings"] = "; ".join(result.get("warnings", ()))
    row["notes"] = "; ".join(result.get("notes", ()))
    if "error" in result:
        row["error_type"], row["error"] = result["error"]["type"], result["error"]["message"]
    return row


def spreadsheet_text(text: str) -> str:
    """``text`` for a CSV cell: a leading ``'`` before text that starts with ``=``, ``+``, ``-``, ``@``,
    a tab or a carriage return (OWASP's advice against CSV injection: a file name ``=1+2.png`` was run as
    a formula by a spreadsheet opening the file), and before a leading ``'`` itself, so that
    :func:`unescaped_text` gives every text back exactly (``'=1`` and ``=1`` stay two names)."""
    return "'" + text if text.startswith((*FORMULA_STARTS, "'")) else text


def unescaped_text(cell: str) -> str:
    """The text a cell written by :func:`spreadsheet_text` stands for (``--resume`` compares file names)."""
    return cell[1:] if cell.startswith("'") else cell


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """A :func:`flat` row as a CSV file holds it: each text cell through :func:`spreadsheet_text`; the
    number columns as they are, so a negative number stays a number."""
    return {k: spreadsheet_text(v) if isinstance(v, str) and k not in NUMBERS else v for k, v in row.items()}
