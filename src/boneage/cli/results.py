"""Results streamed to a file as they are made, so an interruption loses nothing and ``--resume``
picks up where it stopped. The format follows the suffix: ``.csv`` or ``.jsonl``."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import IO, Any

from boneage.errors import InputError

COLUMNS = ("source", "sex", "bone_age_months", "bone_age_years", "interval_low_months", "interval_high_months",
           "interval_level", "chronological_age_months", "bone_age_minus_age_months", "sds", "category",
           "model_name", "model_version", "runtime", "warnings", "notes", "error_type", "error")
FORMATS = (".csv", ".jsonl")


def flat(result: dict[str, Any]) -> dict[str, Any]:
    """One CSV row: lists joined with '; ', the error split into its type and message."""
    row = {c: result.get(c, "") for c in COLUMNS}
    if "male" in result:
        row["sex"] = "male" if result["male"] else "female"
    interval = result.get("interval") or {}
    row["interval_low_months"], row["interval_high_months"] = interval.get("low_months", ""), interval.get("high_months", "")
    row["interval_level"] = interval.get("level", "")
    comparison = result.get("comparison") or {}
    for key in ("chronological_age_months", "bone_age_minus_age_months", "sds", "category"):
        row[key] = "" if comparison.get(key) is None else comparison[key]
    row["warnings"] = "; ".join(result.get("warnings", ()))
    row["notes"] = "; ".join(result.get("notes", ()))
    if "error" in result:
        row["error_type"], row["error"] = result["error"]["type"], result["error"]["message"]
    return row


class ResultFile:
    """Appends one line per result and flushes after each batch; a line cut short by a kill is
    dropped on resume."""

    def __init__(self, path: Path, *, resume: bool, force: bool) -> None:
        self.path, self.suffix = path, path.suffix.lower()
        if self.suffix not in FORMATS:
            raise InputError(f"--output {path}: the suffix must be one of {', '.join(FORMATS)}")
        exists = path.exists() and path.stat().st_size > 0
        if exists and not (resume or force):
            raise InputError(f"--output {path} exists: add --resume to continue it or --force to replace it")
        self.done: set[str] = self._read_done() if exists and resume else set()
        mode = "a" if exists and resume else "w"
        try:
            self._file: IO[str] = path.open(mode, newline="", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
        self._csv = csv.DictWriter(self._file, COLUMNS) if self.suffix == ".csv" else None
        if self._csv is not None and mode == "w":
            self._csv.writeheader()

    def _read_done(self) -> set[str]:
        data = self.path.read_bytes()
        complete = data[: data.rfind(b"\n") + 1]
        if len(complete) != len(data):  # the last line was cut short: drop it, it is redone
            with self.path.open("r+b") as f:
                f.truncate(len(complete))
        text = complete.decode("utf-8", errors="replace")
        try:
            if self.suffix == ".csv":
                rows = list(csv.DictReader(io.StringIO(text)))
                if rows and "source" not in rows[0]:
                    raise InputError(f"--resume: {self.path} is not a results file of this command")
                return {r["source"] for r in rows}
            return {json.loads(line)["source"] for line in text.splitlines() if line.strip()}
        except (json.JSONDecodeError, KeyError, TypeError, csv.Error) as exc:
            raise InputError(f"--resume: cannot read the results in {self.path}: {exc}") from exc

    def write(self, results: list[dict[str, Any]]) -> None:
        for result in results:
            if self._csv is not None:
                self._csv.writerow(flat(result))
            else:
                self._file.write(json.dumps(result, allow_nan=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
