"""``boneage predict``: keeps going past bad files, reports each on stderr, exits non-zero at the end."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boneage.cli.table import format_table
from boneage.errors import BoneAgeError, InputError
from boneage.estimator import BoneAgeEstimator
from boneage.prediction import Prediction
from boneage.sex import parse_sex


@dataclass
class Job:
    path: str
    male: bool | None
    error: BoneAgeError | None = None


def read_jobs(args: argparse.Namespace) -> list[Job]:
    jobs: list[Job] = []
    if args.files and not args.sex:
        raise InputError("--sex male|female is required with FILE arguments (or use --csv with a sex column)")
    for f in args.files:
        jobs.append(Job(f, parse_sex(args.sex)))
    if args.csv:
        path = Path(args.csv)
        try:
            with path.open(newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise InputError(f"cannot read {path}: {exc}") from exc
        if rows and not {"path", "sex"} <= set(rows[0]):
            raise InputError(f"{path} needs the columns path,sex (found: {', '.join(rows[0])})")
        for row in rows:
            file = (path.parent / (row["path"] or "")).as_posix()
            try:
                jobs.append(Job(file, parse_sex(row["sex"] or "")))
            except BoneAgeError as exc:
                jobs.append(Job(file, None, exc))
    if not jobs:
        raise InputError("no input: give FILE... with --sex, or --csv LIST")
    return jobs


def _progress(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="image", disable=None if total > 1 else True, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    jobs = read_jobs(args)
    estimator = BoneAgeEstimator(args.model, runtime=args.runtime, threads=args.threads)
    results: list[dict[str, Any]] = []
    with _progress(len(jobs)) as bar:
        for start in range(0, len(jobs), args.batch_size):
            chunk = jobs[start : start + args.batch_size]
            outcomes = estimator.predict_many([j.path for j in chunk], [j.male for j in chunk], args.batch_size)
            results.extend(_entry(job, outcome) for job, outcome in zip(chunk, outcomes, strict=True))
            bar.update(len(chunk))
    failures = [r for r in results if "error" in r]
    for r in failures:
        print(f"boneage: {r['source']}: {r['error']['message']}", file=sys.stderr)
    print(json.dumps(results, indent=2) if args.json else table(results))
    return 2 if failures else 0


def _entry(job: Job, outcome: Prediction | BoneAgeError) -> dict[str, Any]:
    if isinstance(outcome, Prediction):
        return outcome.model_dump(mode="json")
    error = job.error or outcome  # the CSV's own message for a bad sex, not the facade's
    return {"source": job.path, "error": {"type": type(error).__name__, "message": str(error)}}


def table(results: list[dict[str, Any]]) -> str:
    rows = [("file", "sex", "bone age", "model", "note")]
    for r in results:
        if "error" in r:
            rows.append((r["source"], "", "ERROR", "", r["error"]["message"]))
            continue
        months = r["bone_age_months"]
        years, rest = divmod(round(months), 12)
        age = f"{months:.1f} mo ({years}y {rest}m)"
        model = f"{r['model_name']} {r['model_version']} ({r['runtime']})"
        rows.append((r["source"], "male" if r["male"] else "female", age, model, "; ".join(r["warnings"])))
    return format_table(rows)
