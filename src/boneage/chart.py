"""A growth chart: the child's bone age against the reference, at the child's age.

Matplotlib is optional (extra ``plot``): an edge box that only predicts does not need it. The
figure is built without pyplot, so drawing keeps no global state and is safe in a server thread.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from boneage.errors import InputError, MissingDependencyError
from boneage.files import refuse_link
from boneage.prediction import Prediction, readable, years_and_months
from boneage.references import ReferenceTable

INSTALL = 'pip install "boneage[plot]"'
NEEDS_A_PROGRAM = {"pgf"}  # matplotlib's PGF writer runs LaTeX (xelatex): a RuntimeError where it is not installed


def require_matplotlib() -> None:
    """Raise :class:`MissingDependencyError` now, before any work that would be wasted without it."""
    _matplotlib()


def _matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise MissingDependencyError(f"a growth chart needs matplotlib: {INSTALL} ({exc})") from exc
    return Figure, FigureCanvasAgg


def growth_chart(prediction: Prediction, reference: ReferenceTable, path: str | os.PathLike[str]) -> Path:
    """Draw the reference mean bone age and its +-2 SD band over age for the child's sex, the line
    bone age = age, and the estimate (with its interval, if any) at the child's age; write it in
    the format ``path`` ends with (``.png``, ``.pdf``, ``.svg``, ...).

    The prediction must carry a comparison (made with the child's age) against ``reference``. A
    ``path`` that is a symbolic link, dangling or not, is an :class:`InputError`, as the CLI's
    ``--plot`` is: the chart was written through it to wherever it led."""
    if not isinstance(prediction, Prediction) or not isinstance(path, (str, os.PathLike)):
        raise InputError("plot needs a Prediction and a file path (a str or a Path)")  # was AttributeError/TypeError
    path = Path(path)
    refuse_link(path)
    c = prediction.comparison
    if c is None:
        raise InputError("a growth chart needs the child's age: predict with age_months= (CLI: --age, or --dob with --study-date)")
    if c.reference != reference.name:
        raise InputError(f"the prediction was compared with {c.reference!r}, not with {reference.name!r}")
    figure, canvas = _matplotlib()
    male = prediction.male
    rows = reference.rows(male) / 12.0  # years: how charts are read
    age, ba = c.chronological_age_months / 12.0, prediction.bone_age_months / 12.0
    fig = figure(figsize=(6.4, 5.6), dpi=100)
    canvas(fig)
    ax = fig.add_subplot()
    ax.fill_between(rows[:, 0], rows[:, 1] - 2 * rows[:, 2], rows[:, 1] + 2 * rows[:, 2], color="tab:blue",
                    alpha=0.18, lw=0, label="reference mean +-2 SD")
    ax.plot(rows[:, 0], rows[:, 1], color="tab:blue", lw=1.5, label="reference mean bone age")
    top = max(float(rows[-1, 0]), age, ba) + 1
    ax.plot([0, top], [0, top], color="0.4", ls="--", lw=1, label="bone age = age")
    yerr = None
    label = f"estimate {readable(prediction.bone_age_months, '.0f')} months"
    if prediction.interval is not None:
        i = prediction.interval
        yerr = np.array([[ba - i.low_months / 12.0], [i.high_months / 12.0 - ba]]).clip(0)
        label += f" ({i.level:.0%} interval {readable(i.low_months, '.0f')}-{readable(i.high_months, '.0f')})"
    else:
        label += " (this model has no interval)"
    ax.errorbar([age], [ba], yerr=yerr, fmt="o", color="tab:red", ms=7, capsize=5, lw=2, label=label, zorder=5)
    sds = c.note or (f"SDS {'-' if c.sds is None else readable(c.sds, '+.2f')} ({c.category}); "
                     f"BA - CA {readable(c.bone_age_minus_age_months, '+.1f')} months")
    high = max(top, float((rows[:, 1] + 2 * rows[:, 2]).max()) + 0.5, ba + (0 if yerr is None else float(yerr[1, 0])) + 0.5)
    ax.set(xlim=(0, top), ylim=(0, high), xlabel="chronological age (years)", ylabel="bone age (years)",
           title=f"{'Boy' if male else 'Girl'}, age {years_and_months(c.chronological_age_months)}: {sds}")
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.text(0.01, 0.01, f"Reference: {reference.name} ({reference.population or reference.title}). "
             "The interval is this model's error, not a reader's.", fontsize=6.5, color="0.3", wrap=True)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    kinds = set(fig.canvas.get_supported_filetypes()) - NEEDS_A_PROGRAM
    kind = path.suffix.lower().lstrip(".")
    if kind not in kinds:  # was: PNG bytes under any name, "chart.jpg" too
        raise InputError(f"cannot write {path}: a chart is saved in the format its name ends with, one of "
                         f"{', '.join('.' + k for k in sorted(kinds))}")
    data = io.BytesIO()
    try:  # in memory first: a writer that fails (avif on an older Pillow) leaves no half-written file
        fig.savefig(data, format=kind)
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"cannot write {path} as {kind.upper()}: {exc}") from exc
    try:
        path.write_bytes(data.getvalue())
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return path

