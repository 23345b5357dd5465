"""argparse types and checks for the repository's scripts (``tools/``, ``benchmarks/``): a wrong
argument is a usage error that names it (exit 2), found before any heavy import or minutes of
work, never a traceback from deep inside the run (``--rounds 0`` failed on ``rounds[0]`` after the
whole load test). Only the standard library and boneage's errors are imported here."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from boneage.errors import BoneAgeError
from boneage.files import lookup_errors

DATA_HINT = "give --data, or set BONEAGE_DATA"
ENV_HINT = "set BONEAGE_DATA"
"""How a script without ``--data`` is pointed at the data."""


def whole_number(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: a whole number from ``minimum`` (up to ``maximum``, if given)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"wants a whole number, not {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, not {value}")
        return value

    parse.__name__ = "whole number"
    return parse


positive = whole_number(1)
non_negative = whole_number(0)


def existing_file(text: str) -> Path:
    """An argparse type: a file that is there (a folder is not one)."""
    path = Path(text)
    with lookup_errors(argparse.ArgumentTypeError, text):  # a name too long for the file system raises even here
        folder, file = path.is_dir(), path.is_file()
    if folder:
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
    if not file:
        raise argparse.ArgumentTypeError(f"no such file: {text}")
    return path


def existing_folder(text: str) -> Path:
    """An argparse type: a folder that is there."""
    path = Path(text)
    with lookup_errors(argparse.ArgumentTypeError, text):
        folder = path.is_dir()
    if not folder:
        raise argparse.ArgumentTypeError(f"no such folder: {text}")
    return path


def output_file(text: str) -> Path:
    """An argparse type: a file to write, or to write over, in a folder that is there; a folder,
    or a symbolic link (written through to wherever it leads), is refused."""
    path = Path(text)
    with lookup_errors(argparse.ArgumentTypeError, text):
        link, folder, parent = path.is_symlink(), path.is_dir(), path.absolute().parent.is_dir()
    if link:
        raise argparse.ArgumentTypeError(f"{text} is a symbolic link: give the file it stands for")
    if folder:
        raise argparse.ArgumentTypeError(f"{text} is a folder, not a file")
    if not parent:
        raise argparse.ArgumentTypeError(f"no such folder: {path.parent} (for {text})")
    return path


def new_file(text: str) -> Path:
    """An argparse type: :func:`output_file` that is not there yet, not even as a dangling link
    (a model written over an existing one would be lost)."""
    with lookup_errors(argparse.ArgumentTypeError, text):
        there = Path(text).exists() or Path(text).is_symlink()
    if there:
        raise argparse.ArgumentTypeError(f"{text} exists: choose a new name")
    return output_file(text)


def require(parser: argparse.ArgumentParser, *files: Path, hint: str = "") -> None:
    """``parser.error`` naming the first of ``files`` that is not there, with ``hint`` (how to point
    the script elsewhere, e.g. :data:`DATA_HINT`)."""
    for path in files:
        if not path.is_file():
            parser.error(f"needs the file {path}" + (f" ({hint})" if hint else ""))


def pngs(parser: argparse.ArgumentParser, folder: Path, hint: str = DATA_HINT) -> list[Path]:
    """The PNG files of ``folder``, sorted; ``parser.error`` where there are none (a benchmark
    divided by their count, or took the first of them)."""
    found = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not found:
        parser.error(f"needs PNG radiographs in {folder} ({hint})")
    return found


@contextlib.contextmanager
def usage_errors(parser: argparse.ArgumentParser) -> Iterator[None]:
    """A :class:`~boneage.errors.BoneAgeError` in the block (a model that is not there, a run's
    config that does not read) is a usage error with boneage's message, as the CLI says it."""
    try:
        yield
    except BoneAgeError as exc:
        parser.error(str(exc))
