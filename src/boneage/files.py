"""Reading a file a user named, safely: only a regular file, opened without blocking and checked on
the open descriptor (so a FIFO, a device such as ``/dev/zero``, or a file swapped in meanwhile is
refused rather than read forever), and never more than a limit. Callers turn the errors into
their own typed ones (an image's, a model's)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from boneage.errors import InputError


class NotRegularFileError(OSError):
    """A device, FIFO or socket: not read."""


class FileTooLargeError(OSError):
    """Over the caller's limit: refused from the size on disk, or after reading one byte more."""


@contextmanager
def lookup_errors(error: type[Exception], what: str) -> Iterator[None]:
    """Turn an ``OSError`` from looking a name up into ``error("{what}: reason")``: a name too long
    for the file system makes even ``Path.exists`` raise, which escaped as an internal error."""
    try:
        yield
    except OSError as exc:
        raise error(f"{what}: {exc.strerror or exc}") from exc


def read_regular_file(path: Path, limit: int) -> bytes:
    """The file's bytes. Raises FileNotFoundError, IsADirectoryError, NotRegularFileError,
    FileTooLargeError, ValueError (e.g. a NUL in the path) or another OSError."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(f"{path} is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise NotRegularFileError(f"{path} is not a regular file")
        if info.st_size > limit:
            raise FileTooLargeError(f"{path} is larger than {limit} bytes")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise FileTooLargeError(f"{path} is larger than {limit} bytes")
    return data


def refuse_link(path: Path) -> None:
    """An ``InputError`` if ``path`` is a symbolic link, even a dangling one (which ``exists()``
    calls absent): a figure written to it went to wherever it led (``Explanation.save`` too)."""
    try:
        link = path.is_symlink()
    except OSError as exc:  # a name too long for the file system
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    if link:
        raise InputError(f"{path} is a symbolic link: give the file it stands for")
