"""``boneage evaluate``: a model on labelled radiographs, through the public facade.

Reports MAE, RMSE and R² overall, by sex and by age band, with plots (extra ``train`` for
matplotlib) and a markdown summary.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from boneage.calibration import coverage
from boneage.defaults import MAX_IDS_BYTES
from boneage.errors import BoneAgeError, ConfigError
from boneage.estimator import BoneAgeEstimator
from boneage.files import lookup_errors, read_regular_file
from boneage.metrics import report
from boneage.rows import spreadsheet_text
from boneage.training.config import DataSource
from boneage.training.data import Record, read_source

log = logging.getLogger(__name__)


def read_ids(path: Path) -> set[str]:
    """A run's data.json (its validation ids) or a UTF-8 text file with one id per line: a regular
    file of at most MAX_IDS_BYTES (``/dev/zero`` filled memory, a FIFO with no writer hung), whose
    ``val_id_list`` is a list of ids (5 or ``[[1]]`` was a ``TypeError``: internal error, exit 70)."""
    try:
        text = read_regular_file(path, MAX_IDS_BYTES).decode("utf-8-sig")
        if path.suffix == ".json":
            ids = json.loads(text)["val_id_list"]
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise TypeError("its val_id_list is not a list of ids (strings)")
            return set(ids)
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"cannot read ids from {path} (a run's data.json or one id per line): "
                          f"{type(exc).__name__}: {reason}") from exc
    return {line.strip() for line in text.splitlines() if line.strip()}


def check_limit(limit: int | None) -> None:
    """A limit is a whole number of images, at least 1: a negative one sliced from the end (-1 silently left
    out the last image, -10 left none and crashed) and 0 meant all."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a whole number of images, at least 1, not {limit!r}")


def select(sources: list[DataSource], ids: set[str] | None, limit: int | None) -> list[Record]:
    """The labelled records of all sources, only those in ``ids`` when given, the first ``limit`` of them;
    :class:`~boneage.errors.ConfigError` when none are left, rather than a report on nothing."""
    check_limit(limit)
    with lookup_errors(ConfigError, "cannot read the labelled images given by --data"):
        records = [r for s in sources for r in read_source(s) if ids is None or r.id in ids]
    if not records:
        raise ConfigError("no labelled images to evaluate (check --data and --ids)")
    return records[:limit]


SHOWN_FAILURES = 3  # unreadable images named in the error when none could be read


def predict_records(estimator: BoneAgeEstimator, records: list[Record]) -> tuple[list[Record], np.ndarray, list[str]]:
    """Predictions for every readable record; the others are listed, not fatal, unless no record is readable:
    a :class:`~boneage.errors.ConfigError` naming the first failures (as the report would), rather than a report
    on nothing (the empty arrays crashed the metrics, and the failures were lost)."""
    kept, months, failures = [], [], []
    for r, outcome in zip(records, estimator.predict_many([r.path for r in records], [r.male for r in records]), strict=True):
        if isinstance(outcome, BoneAgeError):
            failures.append(f"{r.path}: {outcome}")
        else:
            kept.append(r)
            months.append(outcome.bone_age_months)
    if not kept:
        more = f"; and {len(failures) - SHOWN_FAILURES:,} more" if len(failures) > SHOWN_FAILURES else ""
        raise ConfigError(f"none of the {len(records):,} images could be read: "
                          f"{'; '.join(failures[:SHOWN_FAILURES])}{more}")
    return kept, np.array(months, dtype=float), failures


REPORT_FILES = ("report.json", "predictions.csv", "summary.md", "plots.png")


def prepare_output(output: Path, force: bool) -> list[Path]:
    """Check that ``output`` can be made and written, and return the reports already in it, before any image is
    predicted (a folder made for the check is removed again, and made when the reports are written): a path that
    cannot be a folder (a file, ``afile/sub``, ``/proc/x``) or a report name taken by a folder is a
    :class:`~boneage.errors.ConfigError` now, not an internal error once every image has been predicted.
    Reports already there are one too unless ``force``, so that one run's files never mix with another's."""
    where = f"cannot write the reports into {output}"
    with lookup_errors(ConfigError, where):
        missing = [folder for folder in (output, *output.parents) if not folder.exists()]
        output.mkdir(parents=True, exist_ok=True)
        existing = [output / name for name in REPORT_FILES if (output / name).exists() or (output / name).is_symlink()]
        folders = [p.name for p in existing if p.is_dir() and not p.is_symlink()]
        writable = os.access(output, os.W_OK | os.X_OK)
        for folder in missing:  # made to be checked, not kept: a run that fails later leaves no empty folder
            folder.rmdir()
    if folders:
        raise ConfigError(f"{where}: {', '.join(folders)} is a folder")
    if not writable:
        raise ConfigError(f"{where}: permission denied")
    if existing and not force:
        raise ConfigError(f"{output} already holds {', '.join(p.name for p in existing)}: choose another --output, or --force")
    return existing


def evaluate(model: str, sources: list[DataSource], output: Path, *, runtime: str | None = None,
             ids: set[str] | None = None, limit: int | None = None, force: bool = False,
             views: int = 1) -> dict[str, Any]:
    """Score ``model`` on the labelled images and write :data:`REPORT_FILES` into ``output``; returns what
    ``report.json`` holds (errors in months, None where a group is empty, unreadable images under ``failures``,
    the card's interval coverage).

    ``output`` is checked first, ``limit`` too (see :func:`prepare_output`, :func:`check_limit`);
    no readable image at all is a :class:`~boneage.errors.ConfigError` (see :func:`predict_records`), and so is
    a report that cannot be written."""
    check_limit(limit)
    existing = prepare_output(output, force)
    estimator = BoneAgeEstimator(model, runtime=runtime, views=views)
    records = select(sources, ids, limit)
    kept, pred, failures = predict_records(estimator, records)
    true = np.array([r.boneage for r in kept], dtype=float)
    male = np.array([r.male for r in kept], dtype=bool)
    result = {
        "model": estimator.card.ref,
        "runtime": estimator.runtime_name,
        "views": views,
        "data": [str(s.images) for s in sources],
        "images": len(kept),
        "failures": failures,
        **report(true, pred, male),
    }
    if estimator.card.interval is not None:  # the card's intervals, checked on these images
        result["interval_coverage"] = {"level": estimator.card.interval.level,
                                       **coverage(estimator.card.interval, pred, true, male)}
    report_json = json.dumps(result, indent=2, allow_nan=False)  # strict JSON: a bare NaN is not
    with lookup_errors(ConfigError, f"cannot write the reports into {output}"):  # e.g. a full disk, or a race
        output.mkdir(parents=True, exist_ok=True)
        for stale in existing:  # --force: no report of another run may stay behind
            stale.unlink()
        (output / "report.json").write_text(report_json)
        with (output / "predictions.csv").open("w", newline="") as f:  # csv quotes an id with a comma or a newline
            writer = csv.writer(f)
            writer.writerow(("id", "boneage", "male", "predicted"))
            # an id such as "=1+2" escaped, as predict --output escapes its text (a spreadsheet ran it)
            writer.writerows((spreadsheet_text(r.id), r.boneage, int(r.male), f"{p:.2f}")
                             for r, p in zip(kept, pred, strict=True))
        (output / "summary.md").write_text(summary_markdown(result))
        try:
            plot(true, pred, output, title=estimator.card.ref)
        except ImportError:
            log.warning("no plots: they need matplotlib (pip install 'boneage[plot]')")
    return result


def _number(value: float | None, spec: str) -> str:
    """A table cell: ``-`` where the group is empty (None in report.json)."""
    return "-" if value is None else format(value, spec)


def _row(name: str, m: dict[str, float | None]) -> str:
    over_24 = "-" if m["over_24"] is None else f"{100 * m['over_24']:.1f}%"
    return (f"| {name} | {m['n']} | {_number(m['mae'], '.2f')} | {_number(m['rmse'], '.2f')} | "
            f"{_number(m['r2'], '.3f')} | {_number(m['bias'], '+.2f')} | {over_24} |")


def summary_markdown(result: dict[str, Any]) -> str:
    """The ``summary.md`` of an :func:`evaluate` result: one table of errors (months) overall, by sex and by age
    band, and the interval coverage when the card has intervals."""
    head = "| group | n | MAE | RMSE | R² | bias | off > 24 mo |\n|---|---|---|---|---|---|---|"
    rows = [_row("all", result["overall"])]
    rows += [_row(sex, m) for sex, m in result["by_sex"].items()]
    rows += [_row(band, m) for band, m in result["by_age"].items()]
    views = f", averaged over {result['views']} views" if result.get("views", 1) > 1 else ""
    return (
        f"# {result['model']} on {', '.join(result['data'])} ({result['runtime']}{views})\n\n"
        f"{result['images']} images, {len(result['failures'])} unreadable. Months; bias = mean(predicted - true). "
        f"Predicting the mean age gives MAE {result['baseline_mean_mae']:.2f}.\n\n{head}\n" + "\n".join(rows) + "\n"
        + _coverage_markdown(result.get("interval_coverage"))
    )


def _coverage_markdown(c: dict[str, Any] | None) -> str:
    if not c:
        return ""
    def row(name: str, m: dict[str, Any]) -> str:
        return f"| {name} | {m['n']} | {_number(m['coverage'], '.3f')} |"

    rows = [row("all", c)] + [row(name, m) for name, m in {**c.get("by_sex", {}), **c["by_age"]}.items()]
    return (f"\nThe card's {c['level']:.0%} intervals (mean width {c['mean_width_months']:.1f} months) hold the "
            f"true age this often:\n\n| group | n | coverage |\n|---|---|---|\n" + "\n".join(rows) + "\n")


def plot(true: np.ndarray, pred: np.ndarray, output: Path, title: str) -> None:
    """Write ``plots.png``: predicted against true, Bland-Altman, and absolute error by age, all in months.
    Raises ImportError without matplotlib, which :func:`evaluate` turns into a warning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    ax.scatter(true, pred, s=6, alpha=0.5)
    ax.plot([0, 230], [0, 230], "k--", lw=1, label="identity")
    ax.set(xlabel="true bone age (months)", ylabel="predicted (months)", title="predicted vs. true")
    ax.legend()
    ax = axes[1]
    mean, diff = (true + pred) / 2, pred - true
    bias, sd = float(diff.mean()), float(diff.std())
    ax.scatter(mean, diff, s=6, alpha=0.5)
    for y, style in ((bias, "-"), (bias + 1.96 * sd, "--"), (bias - 1.96 * sd, "--")):
        ax.axhline(y, color="k", ls=style, lw=1)
    ax.set(xlabel="mean of true and predicted (months)", ylabel="predicted - true (months)",
           title=f"Bland-Altman: bias {bias:+.1f}, limits ±{1.96 * sd:.1f}")
    ax = axes[2]
    ax.scatter(true, np.abs(diff), s=6, alpha=0.5)
    ax.set(xlabel="true bone age (months)", ylabel="absolute error (months)", title="absolute error by age")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(output / "plots.png", dpi=90)
    plt.close(fig)
