"""PNG figures the CLI writes (``explain --output``, ``predict --plot``): checked before any work,
and never written over a file the user has unless ``--force`` says so."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from boneage.errors import InputError
from boneage.estimator import BoneAgeEstimator
from boneage.files import lookup_errors
from boneage.prediction import Prediction


def new_png(text: str, force: bool, flag: str, source: str | os.PathLike[str]) -> Path:
    """The path for a PNG the command is about to write: a .png, in a folder that exists, and
    not a file already there unless ``force``, and never the ``source`` radiograph itself, even with
    ``force`` (``--output hand.png --force`` replaced the radiograph with its heatmap, probe 16); a name
    the file system cannot look up is an :class:`InputError` too."""
    path = Path(text)
    if path.suffix.lower() != ".png":
        raise InputError(f"{flag} {path}: writes a PNG, so the name must end in .png")
    with lookup_errors(InputError, f"{flag} {path} cannot be written"):
        if path.is_symlink():  # even a dangling one, which exists() calls absent: it was written through
            raise InputError(f"{flag} {path} is a symbolic link: give the file it stands for")
        if same_file(path, source):
            raise InputError(f"{flag} {path} is the input radiograph itself: give another name")
        if path.exists() and not force:
            raise InputError(f"{flag} {path} exists: add --force to replace it")
        if path.is_dir():
            raise InputError(f"{flag} {path} is a folder, not a file")
        if not path.parent.is_dir():
            raise InputError(f"{flag} {path}: the folder {path.parent} does not exist")
    return path


def same_file(a: Path, b: str | os.PathLike[str]) -> bool:
    """Whether ``a`` and ``b`` name one existing file (a hard link too); a name that cannot be looked up is not
    this check's to report (the input's own error says it)."""
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def plot_target(args: argparse.Namespace, jobs: list[Any], header_may_say: bool = False) -> Path | None:
    """Check ``predict --plot`` before the model runs: one child, with an age (or a file whose header
    may give it: ``header_may_say``, a DICOM's PatientAge or dates), and matplotlib."""
    if not args.plot:
        return None
    if len(jobs) != 1:
        raise InputError(f"--plot draws one child's growth chart: give one FILE, not {len(jobs)} inputs")
    if jobs[0].age is None and not header_may_say:
        raise InputError("--plot needs the child's age: add --age (e.g. 12y) or --dob with --study-date")
    from boneage.chart import require_matplotlib

    require_matplotlib()
    return new_png(args.plot, args.force, "--plot", jobs[0].path)


def draw_chart(estimator: BoneAgeEstimator, results: list[dict[str, Any]], path: Path) -> bool:
    """The growth chart of the one result, if it is a prediction with an age; whether it was drawn.
    When not, stderr says why and ``predict`` exits 2: an output that was asked for is missing (it
    exited 0, and a script took the chart for made)."""
    if not results:  # --resume found the one input already done
        why = "no input was left to answer (--resume: it is already in the results)"
    elif len(results) != 1 or "error" in results[0]:
        why = "there is no prediction to draw"
    elif (prediction := Prediction.model_validate(results[0])).comparison is None:  # a DICOM whose header gave no age
        why = "the file gave no age; add --age"
    else:
        estimator.plot(prediction, path)
        print(f"boneage: growth chart written to {path}", file=sys.stderr)
        return True
    print(f"boneage: no growth chart written to {path}: {why}", file=sys.stderr)
    return False
