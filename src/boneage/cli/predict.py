"""``boneage predict``: keeps going past bad files, reports each on stderr, exits non-zero at the end.

With ``--output`` results are written as they are made; Ctrl-C keeps every finished result (printed,
or already in the file) and ``--resume`` skips the inputs the file already holds."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boneage.cli.results import ResultFile
from boneage.cli.table import format_table, printable
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
    if args.resume and not args.output:
        raise InputError("--resume needs --output FILE: the results to continue")
    estimator = BoneAgeEstimator(args.model, runtime=args.runtime, threads=args.threads)
    output = ResultFile(Path(args.output), resume=args.resume, force=args.force) if args.output else None
    if output is not None and output.done:
        skipped = len(jobs)
        jobs = [j for j in jobs if j.path not in output.done]
        print(f"boneage: {skipped - len(jobs)} inputs already in {output.path}, {len(jobs)} to go", file=sys.stderr)
    results: list[dict[str, Any]] = []
    interrupted, fatal = False, None
    try:
        with _progress(len(jobs)) as bar:
            for start in range(0, len(jobs), args.batch_size):
                chunk = jobs[start : start + args.batch_size]
                outcomes = estimator.predict_many([j.path for j in chunk], [j.male for j in chunk], args.batch_size)
                new = [_entry(job, outcome) for job, outcome in zip(chunk, outcomes, strict=True)]
                if output is not None:
                    output.write(new)
                results.extend(new)
                bar.update(len(chunk))
    except KeyboardInterrupt:
        interrupted = True
    except BoneAgeError as exc:  # the model or a plugin failed: keep what is done, then say why
        fatal = exc
    finally:
        if output is not None:
            output.close()
    code = _report(args, results, output, interrupted or fatal is not None, len(jobs))
    if fatal is not None:
        raise fatal
    return code


def _report(args: argparse.Namespace, results: list[dict[str, Any]], output: ResultFile | None,
            stopped: bool, total: int) -> int:
    failures = [r for r in results if "error" in r]
    for r in failures:
        print(f"boneage: {printable(r['source'])}: {printable(r['error']['message'])}", file=sys.stderr)
    if output is not None:
        print(f"boneage: {len(results)} results written to {output.path} ({len(failures)} failed)", file=sys.stderr)
    elif results or not stopped:
        print(json.dumps(results, indent=2, allow_nan=False) if args.json else table(results))
    if stopped:
        again = " (run again with --resume to finish)" if output is not None else ""
        print(f"boneage: stopped after {len(results)} of {total} inputs{again}", file=sys.stderr)
        return 130
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
        rows.append((r["source"], "male" if r["male"] else "female", age, model, "; ".join([*r["warnings"], *r.get("notes", ())])))
    return format_table(rows)
