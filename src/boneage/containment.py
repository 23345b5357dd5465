"""What plugin code writes, kept apart from the program's own output (thirteenth probe).

Plugin code runs inside :func:`plugin_code`: an installed plugin's import and its hooks, a step's params
check and build and each call of it, a runtime's load and predict, a reference's load. That marks the
thread it runs in and nothing else: a thread-local depth, no lock, no process-wide switch. The
estimator's worker threads (and the service's request threads) run steps while the main thread prints
results, so ``contextlib.redirect_stdout`` would not do: it swaps ``sys.stdout`` for every thread at once,
so a step printing in a worker would have taken the main thread's results with it, and two steps ending
out of order would put back the wrong stream.

The CLI puts a :class:`ContainedStdout` in place of ``sys.stdout`` for the time of a command
(:func:`contained_output`): what marked code writes goes to the log (logger ``boneage.plugins``, INFO:
shown with ``-v``), a line at a time, at most ``MAX_LINES`` lines of ``MAX_LINE_CHARS`` characters;
everything else reaches stdout as before, so ``--json`` stays JSON. A library caller that installs
nothing keeps its stdout as it was: the marks alone change nothing. Not contained: writes that go
around ``sys.stdout`` (``sys.__stdout__``, ``sys.stdout.buffer``, ``os.write(1, ...)``) and writes from
threads a plugin starts itself.

Python warnings (a plugin's ``warnings.warn``, or any library's) go through the log too while a command
runs: left out without ``-v``, as the C libraries' messages on file descriptor 2 are, and at most
``MAX_WARNINGS`` with it (1,000 warnings at a plugin's import were 2,000 lines on stderr).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("boneage.plugins")

MAX_LINES = 100  # lines of plugin output logged by one command; the rest are left out
MAX_LINE_CHARS = 500
MAX_WARNINGS = 20  # Python warnings logged by one command under -v

_marks = threading.local()


def in_plugin_code() -> bool:
    """Whether this thread is running plugin code (inside :func:`plugin_code`)."""
    return getattr(_marks, "depth", 0) > 0


class _PluginCode:
    """The context manager :func:`plugin_code` returns: re-entrant, per thread, a few attribute sets."""

    def __enter__(self) -> None:
        _marks.depth = getattr(_marks, "depth", 0) + 1

    def __exit__(self, *exc: object) -> None:
        _marks.depth -= 1
        if not _marks.depth:
            stdout = sys.stdout
            if isinstance(stdout, ContainedStdout):
                stdout.end_of_plugin_code()


_PLUGIN_CODE = _PluginCode()


def plugin_code() -> _PluginCode:
    """``with plugin_code(): ...`` around a call into plugin code (see the module's docstring)."""
    return _PLUGIN_CODE


def _shortened(line: str) -> str:
    return line if len(line) <= MAX_LINE_CHARS else f"{line[:MAX_LINE_CHARS]}... ({len(line):,} characters)"


class ContainedStdout:
    """``sys.stdout`` for a CLI command: text written by plugin code (:func:`in_plugin_code`) goes to the
    log, everything else to ``stream``. Attributes other than ``write``, ``writelines`` and ``flush``
    are the stream's own (``fileno``, ``encoding``, ``isatty``, ``buffer``)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self._pending = threading.local()  # a plugin's line not yet ended, per thread: print writes it in parts
        self._lines = itertools.count()  # next() is atomic under the GIL: no lock

    def write(self, text: str) -> Any:
        if not in_plugin_code() or getattr(self._pending, "logging", False):  # a log handler on stdout: no loop
            return self.stream.write(text)  # as the stream answers: colorama's and IDE streams return None
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        pending = getattr(self._pending, "text", "") + text
        *lines, rest = pending.split("\n")
        for line in lines:
            self._log(line)
        if len(rest) > MAX_LINE_CHARS:  # no line end in sight: logged now, not held without bound
            self._log(rest)
            rest = ""
        self._pending.text = rest
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not in_plugin_code():
            self.stream.flush()

    def end_of_plugin_code(self) -> None:
        """Log what this thread's plugin code wrote after its last line end."""
        rest = getattr(self._pending, "text", "")
        self._pending.text = ""
        if rest:
            self._log(rest)

    def _log(self, line: str) -> None:
        if not line.strip():
            return
        count = next(self._lines)
        self._pending.logging = True
        try:
            if count < MAX_LINES:
                log.info("plugin code printed: %s", _shortened(line.rstrip("\r")))
            elif count == MAX_LINES:
                log.info("plugin code printed more than %d lines; the rest are left out", MAX_LINES)
        finally:
            self._pending.logging = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


class _BoundedWarnings(logging.Filter):
    """On the ``py.warnings`` logger: none shown unless ``shown``, then at most MAX_WARNINGS and a line saying so."""

    def __init__(self, shown: bool) -> None:
        super().__init__()
        self.shown = shown
        self._count = itertools.count()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.shown:
            return False
        count = next(self._count)
        if isinstance(record.args, tuple) and len(record.args) == 1 and isinstance(record.args[0], str):
            record.args = (record.args[0].rstrip(),)  # formatwarning's own line end: a blank line in the log
        if count == MAX_WARNINGS:
            record.msg, record.args = f"more than {MAX_WARNINGS} Python warnings; the rest are left out", ()
        return count <= MAX_WARNINGS


@contextlib.contextmanager
def contained_output(verbose: bool) -> Iterator[None]:
    """For a CLI command: plugin code's stdout to the log (:class:`ContainedStdout`), and Python warnings to
    the log, shown only when ``verbose`` and bounded; both put back as they were afterwards (tests run the
    CLI in their own process)."""
    stdout = sys.stdout
    contained = ContainedStdout(stdout) if stdout is not None else None
    if contained is not None:
        sys.stdout = contained
    captured = getattr(logging, "_warnings_showwarning", None) is not None  # by the caller already: left on
    logging.captureWarnings(True)
    bound = _BoundedWarnings(verbose)
    logger = logging.getLogger("py.warnings")
    logger.addFilter(bound)
    try:
        yield
    finally:
        logger.removeFilter(bound)
        if not captured:
            logging.captureWarnings(False)
        if contained is not None and sys.stdout is contained:
            sys.stdout = stdout
