"""One flat row per result, as every results file and engine writes it: the columns, which of them
are numbers, and :func:`flat`, which turns a prediction's (or a failure's) dict into a row.

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
