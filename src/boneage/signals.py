"""SIGTERM handled as Ctrl-C is: the signal that ``timeout``, ``docker stop``, systemd, Kubernetes and
Slurm send ended a ``boneage predict`` at once (exit 143, no output), losing a batch's finished answers
that Ctrl-C keeps. Under :func:`terminate_as_interrupt` it raises :class:`Terminated`, a
``KeyboardInterrupt``, in the main thread, so every ``except KeyboardInterrupt`` that keeps finished
work (the results printed or flushed, a training run's last epoch) keeps it on SIGTERM too."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")

SIGINT_EXIT = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
SIGTERM_EXIT = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's ``KeyboardInterrupt`` would be."""


def interrupt_exit_code(exc: BaseException) -> int:
    """143 for SIGTERM, 130 for Ctrl-C: what a shell reports for a process the signal ended."""
    return SIGTERM_EXIT if isinstance(exc, Terminated) else SIGINT_EXIT


def stopped_by(exc: BaseException) -> str:
    """"terminated (SIGTERM)" or "interrupted", for the message that says the command stopped."""
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within it, the first SIGTERM raises :class:`Terminated` in the main thread; a second one ends the
    process at once, as SIGTERM did before (what is being saved after the first may be what hangs).
    The handler in place before is restored after. Outside the main thread (where Python cannot set a
    handler) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pid = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if os.getpid() != pid:  # a forked child that inherited the handler: ends as it would have
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except (ValueError, OSError):  # no signals here (an embedded interpreter): nothing to change
        yield
        return
    try:
        yield
    finally:
        # None: a handler set outside Python, which cannot be put back; the default is the closest
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


@contextmanager
def held() -> Iterator[None]:
    """Ctrl-C and SIGTERM held back until the block is done, for steps that must happen together: a
    batch written to the output file and counted as done (an interrupt between the two said "stopped
    after 24" of a file holding 28). Inside the block a first signal is only noted, and the handlers in
    place before get it when the block ends normally (an error from the block wins over it); a second
    one gets them at once, as a second SIGTERM ends a stuck save. Outside the main thread, or where
    handlers cannot be set, it holds nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kinds = (signal.SIGINT, signal.SIGTERM)
    noted: list[int] = []
    previous: dict[int, Any] = {}  # what signal.signal gave back: a handler, SIG_DFL/SIG_IGN, or None

    def restore() -> None:
        for kind, handler in previous.items():
            signal.signal(kind, handler if handler is not None else signal.SIG_DFL)

    def deliver(signum: int) -> None:
        handler = previous[signum]
        if callable(handler):
            handler(signum, None)
        elif handler == signal.SIG_DFL:
            os.kill(os.getpid(), signum)

    def note(signum: int, frame: FrameType | None) -> None:
        noted.append(signum)
        if len(noted) > 1:
            restore()
            deliver(signum)

    try:
        for kind in kinds:
            previous[kind] = signal.signal(kind, note)
    except (ValueError, OSError):  # no signals here (an embedded interpreter): nothing to hold
        restore()
        yield
        return
    try:
        yield
    finally:
        restore()
    if noted:  # reached only when the block ended normally
        deliver(noted[0])


def _block_stops() -> Callable[[], None]:
    """Block Ctrl-C and SIGTERM in this thread; the function that unblocks them (nothing where the platform
    has no signal masks: Windows)."""
    if not hasattr(signal, "pthread_sigmask"):
        return lambda: None
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})

    def unblock() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    return unblock


def interruptible(call: Callable[[], T], stop: Callable[[], None]) -> T:
    """``call()``, run so that Ctrl-C or SIGTERM (under :func:`terminate_as_interrupt`) stops it: Python runs its
    signal handlers in the main thread, between bytecodes, so a signal that comes while the main thread is in a
    long C call (ONNX Runtime's ``session.run``: 23-29 s after Ctrl-C with a 56 s model) waits for it to return.
    In the main thread, ``call`` runs in a helper thread while this one waits, which a signal interrupts; then
    ``stop()`` asks ``call`` to end, its end is waited for (a thread left in a C++ call when Python exits aborts
    the process), and the ``KeyboardInterrupt`` goes on. Elsewhere (a signal never interrupts another thread)
    ``call()`` is run as it is."""
    if threading.current_thread() is not threading.main_thread():
        return call()
    outcome: list[tuple[bool, Any]] = []
    done = threading.Event()  # not Thread.join: an interrupted join marks a running thread as ended (Python 3.11)

    def run() -> None:
        try:
            outcome.append((True, call()))
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            outcome.append((False, exc))
        finally:
            done.set()

    # blocked while the thread starts: a signal there (Thread.start waits for it) escaped without stop() or waiting
    unblock = _block_stops()
    try:
        threading.Thread(target=run, name="boneage-interruptible", daemon=True).start()
    except BaseException:
        unblock()
        raise
    try:
        unblock()  # a signal that came meanwhile is handled here
        done.wait()
    except BaseException:  # Ctrl-C or SIGTERM: call is asked to end, within one step, and waited for
        stop()
        while not done.is_set():
            with suppress(KeyboardInterrupt):  # a second Ctrl-C waits too (a second SIGTERM ends the process at once)
                done.wait()
        raise
    finished, value = outcome.pop()
    if not finished:
        raise value  # popped: the traceback does not keep the batch alive
    return value  # type: ignore[no-any-return]
