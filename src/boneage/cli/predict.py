"""``boneage predict``: keeps going past bad files, reports each on stderr, exits non-zero at the end.

With ``--output`` results are written as they are made; Ctrl-C keeps every finished result (printed,
or already in the file) and ``--resume`` skips the inputs the file already holds."""

from __future__ import annotations

import argparse
import contextlib
import csv
import fnmatch
import itertools
import json
import os
import re
import sys
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boneage.age import age_from_dates, parse_age
from boneage.cli.figures import draw_chart, plot_target
from boneage.cli.results import ResultFile
from boneage.cli.table import format_table
from boneage.columns import ColumnsError, csv_rows
from boneage.errors import AgeError, BoneAgeError, InputError, SexError, printable, shortened
from boneage.estimator import BoneAgeEstimator
from boneage.imageio import read_path
from boneage.prediction import Prediction, readable, years_and_months
from boneage.sex import parse_sex
from boneage.signals import held, interrupt_exit_code


@dataclass
class Job:
    """One input as the command line or the CSV gave it; ``male`` None leaves the sex to a DICOM's
    header, and ``error`` keeps a CSV row's own message for a bad sex or age."""

    path: str
    male: bool | None
    age: float | None = None
    error: BoneAgeError | None = None


def command_line_age(args: argparse.Namespace) -> float | None:
    """``--age 10y3m`` or ``--dob`` with ``--study-date``; one or the other, not both."""
    if args.age is not None and (args.dob or args.study_date):
        raise AgeError("give --age, or --dob with --study-date, not both")
    if bool(args.dob) != bool(args.study_date):
        raise AgeError("--dob and --study-date go together")
    if args.dob:
        return age_from_dates(args.dob, args.study_date)
    return None if args.age is None else parse_age(args.age)


def row_age(row: dict[str, str | None]) -> float | None:
    """A CSV row's age: an ``age`` column (months or 10y3m), or ``dob`` and ``study_date``; not both,
    as on the command line (the age won, and dates 7 months from it were dropped without a word)."""
    age, dob, study = ((row.get(key) or "").strip() for key in ("age", "dob", "study_date"))
    if age and (dob or study):
        raise AgeError("give age, or dob with study_date, not both")
    if age:
        return parse_age(age)
    return age_from_dates(dob, study) if dob or study else None


IMAGE_PATTERN = "*.png,*.jpg,*.jpeg,*.tif,*.tiff,*.bmp,*.webp,*.dcm,*.dicom"
# Files that cannot say their sex; any other (a .dcm, a DICOM named by its UID) may, in its header.
NO_HEADER_SEX = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm", ".mpo"}


def expand(path: str, pattern: str) -> list[str]:
    """A folder becomes the files under it (recursively, symlinked folders not followed, sorted)
    whose names match one of the comma-separated patterns, case-insensitively; a file stays itself.
    A folder without one is an :class:`InputError`, which :func:`read_jobs` makes that input's error."""
    try:  # "" is no folder (Path("") is the current one)
        folder = bool(path) and Path(path).is_dir()
    except OSError:  # a name too long, ...: not a folder; reading it says what is wrong (was exit 70)
        folder = False
    if not folder:
        return [path]
    # one expression for all the patterns: each name was matched against each (4,000 globs over 800 files: 12.6 s)
    matches = re.compile("|".join(fnmatch.translate(g.strip().lower()) for g in pattern.split(",") if g.strip())
                         or "(?!)").match
    found = sorted(
        (Path(root) / name).as_posix()
        for root, _, names in os.walk(path)  # followlinks=False: a symlink loop cannot hang it
        for name in names
        if matches(name.lower())
    )
    if not found:  # said after the folder's name, as a job's error is; a long pattern shortened
        raise InputError(f"no files matching {shortened(pattern, 200)} under this folder")
    return found


PATIENT_OPTIONS = ("sex", "age", "dob", "study_date")


def read_jobs(args: argparse.Namespace) -> list[Job]:
    """Every input from FILE... and ``--csv``, before any image is read: an :class:`InputError` for a
    missing sex, an unreadable list or no input at all; a bad CSV row, or a folder with no image, becomes a job
    with its error.

    ``--sex``, ``--age``, ``--dob`` and ``--study-date`` describe the FILE arguments; a list's rows take
    theirs from its columns only. With ``--csv`` and no FILE they would describe nothing, so they are
    refused (they were accepted and applied to no row)."""
    given = [f"--{name.replace('_', '-')}" for name in PATIENT_OPTIONS if getattr(args, name) is not None]
    if args.csv and not args.files and given:
        raise InputError(f"{', '.join(given)} apply to FILE arguments, not to the rows of --csv: give each row's "
                         "sex and age in the list's columns (sex, age or dob and study_date)")
    jobs: list[Job] = []
    age = command_line_age(args)
    sex = args.sex  # None: each DICOM's header says it
    for f in args.files:
        try:
            files = expand(f, args.pattern)
        except InputError as exc:  # that argument's own error, as a missing file's is: the others are answered
            jobs.append(Job(f, sex, age, exc))  # (an empty folder stopped the whole batch, nothing answered)
            continue
        headerless = [file for file in files if Path(file).suffix.lower() in NO_HEADER_SEX]
        if sex is None and headerless:
            raise InputError(f"--sex male|female is required for {printable(headerless[0])} (only a DICOM header can "
                             "give the sex; or use --csv with a sex column)")
        jobs += [Job(file, sex, age) for file in files]
    if args.csv:
        jobs += list_jobs(Path(args.csv))
    if not jobs:
        raise InputError("no input: give FILE... with --sex, or --csv LIST")
    return jobs


def list_jobs(path: Path) -> list[Job]:
    """The jobs of a ``--csv`` list: one a row, blank rows skipped, every cell stripped. A row with a bad
    sex or age, more cells than the header names, or no sex for a file whose header cannot give one,
    is a job with its error: it is reported, and never answered from a DICOM header instead."""
    try:
        # a regular file of bounded size: /dev/zero or a FIFO with no writer must not hang it
        # Path,Sex or " path " as spreadsheets write them: columns are matched case-insensitively
        rows = [row for row in csv_rows(read_path(path)) if not row.blank]
    except (UnicodeDecodeError, csv.Error, ColumnsError, BoneAgeError) as exc:
        raise InputError(f"cannot read the list {printable(str(path))}: {exc}") from exc
    if rows and not {"path", "sex"} <= set(rows[0].cells):
        # Only the names it lacks: a list without a header line starts with a row of data (a name, a
        # date of birth, an ID), which was echoed here as "found: ..."
        lacking = " and ".join(sorted({"path", "sex"} - set(rows[0].cells)))
        raise InputError(f"{printable(str(path))} has no {lacking} column: its first line must name the "
                         "columns (path,sex and optionally age); what it holds is not shown")
    jobs = []
    for row in rows:
        cells = row.cells
        file = (path.parent / (cells["path"] or "").strip()).as_posix()
        try:
            if row.extra:  # its values are not shown: a misaligned row may put a name where a path goes
                raise InputError(f"it holds {row.extra} more cell(s) than the header names (put a cell that holds "
                                 "a comma in quotes); values not shown")
            sex_text = (cells["sex"] or "").strip()  # empty: a DICOM's header says it
            if not sex_text and Path(file).suffix.lower() in NO_HEADER_SEX:
                raise SexError("its sex cell is empty, and only a DICOM header can give the sex: fill it "
                               "(male/female, M/F, 1/0)")
            jobs.append(Job(file, parse_sex(sex_text) if sex_text else None, row_age(cells)))
        except BoneAgeError as exc:  # the row's own error, with where it is
            jobs.append(Job(file, None, None, type(exc)(f"line {row.line} of the list: {exc}")))
    return jobs


def check_same_model(output: ResultFile, estimator: BoneAgeEstimator) -> None:
    """``--resume`` goes on only with the model the file's answers came from: another one skipped the inputs
    answered, so one file mixed two models' answers, and a rerun to correct the model silently did nothing."""
    others = sorted({(str(name), str(version)) for name, version in output.models if name is not None}
                    - {(estimator.card.name, estimator.card.version)})
    if others:
        shown = printable(", ".join(f"{name} {version}" for name, version in others[:3]))[:200]
        raise InputError(f"--resume: {printable(str(output.path))} holds answers of {shown}, not of this run's model "
                         f"{estimator.card.name} {estimator.card.version}: pass that --model, or continue into another "
                         "--output")


def _progress(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="image", disable=None if total > 1 else True, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Exit 0 when every input was answered, 2 when some failed (each reported) or the ``--plot`` chart
    could not be drawn, 130 when stopped by Ctrl-C and 143 by SIGTERM (finished results kept either way);
    a model or plugin failure is raised after what was done is kept."""
    jobs = read_jobs(args)
    plot = plot_target(args, jobs, header_may_say=bool(jobs) and Path(jobs[0].path).suffix.lower() not in NO_HEADER_SEX)
    if args.resume and not args.output:
        raise InputError("--resume needs --output FILE: the results to continue")
    # Many files: one inference thread, and the other cores decode the next batch meanwhile
    # (1.86x the radiographs per second of the default on 2 cores, benchmarks/batch_throughput.py).
    threads = args.threads or (1 if len(jobs) > args.batch_size else None)
    estimator = BoneAgeEstimator(args.model, runtime=args.runtime, threads=threads, check_input=not args.no_input_check,
                                 views=args.views)
    _check_engine(args)
    output = ResultFile(Path(args.output), resume=args.resume, force=args.force) if args.output else None
    if output is not None:
        check_same_model(output, estimator)
    if output is not None and output.done:
        skipped = len(jobs)
        jobs = [j for j in jobs if not output.answered(j.path)]
        print(f"boneage: {skipped - len(jobs)} inputs already in {printable(str(output.path))}, {len(jobs)} to go",
              file=sys.stderr)
    results: list[dict[str, Any]] = []
    interrupted: KeyboardInterrupt | None = None  # Ctrl-C, or SIGTERM (boneage.signals.Terminated)
    fatal = None
    try:
        # A list row with its own error is reported as such: never sent to the model, where a DICOM's
        # header filled the sex and age the row got wrong (answered, exit 0)
        runnable = [job for job in jobs if job.error is None]
        with _progress(len(jobs)) as bar, contextlib.closing(_outcomes(args, estimator, runnable)) as stream:
            for start in range(0, len(jobs), args.batch_size):
                chunk = jobs[start : start + args.batch_size]
                answered = iter(list(itertools.islice(stream, sum(job.error is None for job in chunk))))
                new = [_entry(job, job.error or next(answered)) for job in chunk]
                with held():  # written and counted together: what the message says is what the file holds
                    if output is not None:
                        output.write(new)
                    results.extend(new)
                bar.update(len(chunk))
    except KeyboardInterrupt as exc:
        interrupted = exc
    except BoneAgeError as exc:  # the model or a plugin failed: keep what is done, then say why
        fatal = exc
    except OSError as exc:  # the output could not be written (a full disk): keep what is done
        fatal = InputError(f"cannot write the results: {exc.strerror or exc}")
    finally:
        if output is not None:
            try:
                output.close()
            except BoneAgeError as exc:
                fatal = fatal or exc
    code = _report(args, results, output, interrupted is not None or fatal is not None, len(jobs))
    if interrupted is not None:
        code = interrupt_exit_code(interrupted)  # 130 for Ctrl-C, 143 for SIGTERM
    if plot is not None and interrupted is None and fatal is None and not draw_chart(estimator, results, plot):
        code = 2  # the chart asked for is not written (stderr says why): not a success
    if fatal is not None:
        raise fatal
    return code


def _check_engine(args: argparse.Namespace) -> None:
    """Ray options only with ``--engine ray``; a missing Ray, or a cluster out of reach, is said
    before any output is written."""
    if args.engine != "ray":
        if args.ray_address or args.actors:
            raise InputError("--ray-address and --actors go with --engine ray")
        return
    from boneage.engines.ray import connect

    connect(args.ray_address)


def _outcomes(args: argparse.Namespace, estimator: BoneAgeEstimator,
              jobs: list[Job]) -> Generator[Prediction | BoneAgeError, None, None]:
    """Each job's outcome, in order: a batch at a time here, or from Ray's actors as they finish."""
    if not jobs:  # every row of the list had its own error: nothing to send
        return
    paths, males, ages, size = [j.path for j in jobs], [j.male for j in jobs], [j.age for j in jobs], args.batch_size
    if args.engine == "ray":
        from boneage.engines.ray import outcomes

        yield from outcomes(paths, males, ages, model=args.model, runtime=args.runtime, threads=args.threads,
                            actors=args.actors, batch_size=size, progress=False,
                            check_input=not args.no_input_check, views=args.views)
        return
    for batch in estimator.iter_predictions(paths, males, size, ages=ages):  # the next batch decodes meanwhile
        yield from batch


def _report(args: argparse.Namespace, results: list[dict[str, Any]], output: ResultFile | None,
            stopped: bool, total: int) -> int:
    failures = [r for r in results if "error" in r]
    for r in failures:
        print(f"boneage: {printable(r['source'])}: {printable(r['error']['message'])}", file=sys.stderr)
    if output is not None:
        print(f"boneage: {len(results)} results written to {printable(str(output.path))} ({len(failures)} failed)",
              file=sys.stderr)
    elif results or not stopped:
        print(json.dumps(results, indent=2, allow_nan=False) if args.json else table(results))
    if stopped:
        again = " (run again with --resume to finish)" if output is not None else ""
        print(f"boneage: stopped after {len(results)} of {total} inputs{again}", file=sys.stderr)
        return 130
    return 2 if failures else 0


def _entry(job: Job, outcome: Prediction | BoneAgeError) -> dict[str, Any]:
    if isinstance(outcome, Prediction) and job.error is None:
        return outcome.model_dump(mode="json")
    error = job.error or outcome  # the CSV's own message for a bad sex or age, not the facade's
    return {"source": job.path, "error": {"type": type(error).__name__, "message": str(error)}}


def table(results: list[dict[str, Any]]) -> str:
    """The terminal table of results as JSON dicts (shared with ``boneage explain``); the interval
    and age columns appear only when some result has them."""
    with_interval = any(r.get("interval") for r in results)
    with_age = any(r.get("comparison") for r in results)
    header = ["file", "sex", "bone age", *(["interval"] if with_interval else []),
              *(["age", "BA - CA", "SDS"] if with_age else []), "model", "note"]
    rows = [header]
    for r in results:
        if "error" in r:
            rows.append([r["source"], "", "ERROR", *[""] * (len(header) - 5), "", r["error"]["message"]])
            continue
        months = r["bone_age_months"]
        # readable: an absurd answer (1e308) is 1.7e+308, not 309 digits
        row = [r["source"], "male" if r["male"] else "female", f"{readable(months)} mo ({years_and_months(months)})"]
        if with_interval:
            i = r.get("interval")
            row.append(f"{readable(i['low_months'], '.0f')}-{readable(i['high_months'], '.0f')} mo ({i['level']:.0%})"
                       if i else "")
        if with_age:
            row += _comparison_cells(r.get("comparison"))
        row += [f"{r['model_name']} {r['model_version']} ({r['runtime']})",
                "; ".join([*r["warnings"], *r.get("notes", ())])]
        rows.append(row)
    return format_table(rows)


def _comparison_cells(c: dict[str, Any] | None) -> list[str]:
    if not c:
        return ["", "", ""]
    sds = "no reference" if c["sds"] is None else f"{readable(c['sds'], '+.2f')} ({c['category']})"
    return [f"{c['chronological_age_months']:.1f} mo ({years_and_months(c['chronological_age_months'])})",
            f"{readable(c['bone_age_minus_age_months'], '+.1f')} mo", sds]
