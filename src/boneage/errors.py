"""Typed errors: library callers catch these, the CLI turns them into one-line messages."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

SHOWN_NAME = 40  # characters of a field name or key quoted in a message: a config key can be megabytes long


class BoneAgeError(Exception):
    """Base of every error boneage raises on purpose."""

    exit_code = 1


class InputError(BoneAgeError, ValueError):
    """Something the caller passed in is unusable."""

    exit_code = 2


class ImageReadError(InputError):
    """The image cannot be read: missing, a directory, empty, truncated or not an image."""


class UnsupportedImageError(InputError):
    """The image decodes but its type, shape or values cannot be a radiograph."""


class NotARadiographError(UnsupportedImageError):
    """The image is not a hand radiograph as far as the input checks can tell (colour, blank,
    saturated); ``BoneAgeEstimator(check_input=False)`` or ``--no-input-check`` answers anyway."""


class ImageTooSmallError(InputError):
    """Too few pixels to hold a hand that a model could read."""


class ImageTooLargeError(InputError):
    """Refused before decoding, so a hostile header cannot exhaust memory."""


class PreprocessError(InputError):
    """A preprocessing step failed on this image (the message names the step)."""


class SexError(InputError):
    """The sex is missing or not one of the accepted spellings."""


class AgeError(InputError):
    """The chronological age (or the dates it comes from) is missing, malformed or impossible."""


class ModelError(BoneAgeError):
    """A model cannot be used."""

    exit_code = 3


class ModelNotFoundError(ModelError, FileNotFoundError):
    """No model by that name or path."""


class InvalidModelError(ModelError):
    """The file is not a usable boneage model: no card, wrong schema, wrong inputs."""


class ChecksumMismatchError(InvalidModelError):
    """The model file differs from the one that was registered or exported."""


class ModelOutputError(InvalidModelError):
    """The model answered something that cannot be months: NaN, infinite, or of the wrong shape
    or type. A fault of the model, not of the image, so no answer is given at all."""


class PluginError(BoneAgeError):
    """A plugin is missing, broken or clashes with another."""

    exit_code = 4


class PluginNotFoundError(PluginError, KeyError):
    """Nothing is registered under that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DuplicatePluginError(PluginError):
    """Two sources register the same name."""


class MissingDependencyError(BoneAgeError, ImportError):
    """An optional dependency is needed; the message names the extra that installs it."""

    exit_code = 5


class ConfigError(BoneAgeError, ValueError):
    """A configuration file or override is invalid."""

    exit_code = 2


class ExportError(BoneAgeError):
    """A trained run cannot become a release: its version exists, or ONNX and Keras disagree."""

    exit_code = 6


class TrainingInterrupted(BoneAgeError):
    """Training was stopped by the user; the finished epochs are kept for ``--resume``."""

    exit_code = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def failure_text(exc: BaseException, with_type: bool = True) -> str:
    """What went wrong in another library's or a plugin's code, on one line: ``Type: text`` (the text
    alone without ``with_type``, or the type where there is no text); a ``SystemExit`` as the
    ``sys.exit(code)`` it was; an exception whose ``str`` fails as ``(unprintable)``."""
    name = type(exc).__name__
    if isinstance(exc, SystemExit):
        try:
            code = repr(exc.code)
        except Exception:  # a plugin's exit code may be any object
            code = "..."
        return f"{name}: it called sys.exit({code[:100]})"
    try:
        text = str(exc)
    except Exception:  # a plugin's exception may not even print
        text = "(unprintable)"
    if not text:
        return name
    return f"{name}: {text}" if with_type else text


@contextlib.contextmanager
def failures_as(error: type[BoneAgeError], message: str) -> Iterator[None]:
    """Another library's or a plugin's exception, raised as ``error("message: Type: text")``; ours pass
    through as they are, and so does ``KeyboardInterrupt`` (the user's interrupt). Plugin code that
    calls ``sys.exit()``, recurses without end or runs out of memory is that plugin's failure too: it
    ended the command with the plugin's own exit code (or as an internal error, exit 70), and lost a
    batch's finished answers."""
    try:
        yield
    except (BoneAgeError, KeyboardInterrupt):
        raise
    except BaseException as exc:  # SystemExit, RecursionError, MemoryError included
        raise error(f"{message}: {failure_text(exc)}") from exc


def printable(text: str) -> str:
    """Control characters (a file name can hold an escape sequence) shown as escapes, not obeyed."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def shortened(part: object, limit: int = SHOWN_NAME) -> str:
    """``part`` escaped (:func:`printable`) and, past ``limit`` characters, cut with its length said."""
    text = printable(str(part))
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def validation_problems(errors: Sequence[Mapping[str, Any]], skip: int = 0, limit: int = 3) -> str:
    """pydantic's ``exc.errors()`` on one line: the first ``limit`` as ``where: what``, without
    the input's value (it may be personal data or megabytes) and with each part of ``where``
    escaped and shortened (a 5 MB unknown key was quoted whole); ``skip`` leading parts of each
    location left out (a request's "body")."""
    parts = []
    for error in errors[:limit]:
        where = ".".join(shortened(part) for part in error["loc"][skip:])
        parts.append(f"{where}: {error['msg']}" if where else str(error["msg"]))
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit:,} more")
    return "; ".join(parts)
