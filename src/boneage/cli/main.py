"""Argument parsing and error handling for every sub-command.

Only argparse and the version are imported up front, so ``boneage --version`` and ``--help``
answer at once; each handler is imported by name when its command runs.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence

from boneage._version import __version__
from boneage.containment import contained_output
from boneage.defaults import BATCH_SIZE, MAX_BATCH_SIZE, MAX_MODEL_INPUTS, MAX_THREADS, MAX_VIEWS

Configure = Callable[[argparse.ArgumentParser], None]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _one_to(limit: int, name: str) -> Callable[[str], int]:
    """An argparse type for a whole number from 1 to ``limit``; ``name`` is what argparse calls it
    in "invalid ... value" when the text is not a number."""

    def parse(text: str) -> int:
        value = _positive(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"must be at most {limit}, not {value}")
        return value

    parse.__name__ = name
    return parse


_threads = _one_to(MAX_THREADS, "_threads")
_views = _one_to(MAX_VIEWS, "_views")
_batch_size = _one_to(MAX_BATCH_SIZE, "_batch_size")


VIEWS_HELP = (f"average each estimate over this many sampling grids of the image, 1-{MAX_VIEWS} (default 1): "
              "steadier under re-encoding and resampling, for that many times the model's work")


RUNTIME_HELP = "onnx or tensorflow, or a plugin's runtime (default: onnx; tensorflow for a .keras model)"


def _sex(value: str) -> bool:
    """True for male, as a CSV's sex column is read (:func:`~boneage.sex.parse_sex`); anything else is a
    usage error that never shows the value (argparse's choices echoed it: a name or an ID pasted
    from a list where the sex goes)."""
    from boneage.errors import SexError
    from boneage.sex import parse_sex  # here: numpy is not loaded for --help

    try:
        return parse_sex(value)
    except SexError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="radiographs (PNG, JPEG, TIFF, BMP, WebP; DICOM with the extra dicom), or folders of them")
    p.add_argument("--pattern", default="*.png,*.jpg,*.jpeg,*.tif,*.tiff,*.bmp,*.webp,*.dcm,*.dicom",
                   help="for folders: the file names to take, comma-separated globs (default: the image formats)")
    p.add_argument("--sex", type=_sex, metavar="{male,female,m,f,1,0}",
                   help="the sex of every child in FILE... (male/female, M/F, 1/0, true/false as in CSVs; default for DICOM: its PatientSex)")
    p.add_argument("--csv", metavar="LIST",
                   help="a CSV with columns path,sex (and age, or dob and study_date, if known) for many files; "
                        "each row takes its sex and age from its own cells, never from --sex or --age")
    p.add_argument("--age", help="the age of every child in FILE...: months (123) or years and months (10y3m); "
                                 "compares the bone age with it")
    p.add_argument("--dob", metavar="YYYY-MM-DD", help="date of birth (with --study-date, instead of --age); never printed")
    p.add_argument("--study-date", metavar="YYYY-MM-DD", help="the date the radiograph was taken (with --dob)")
    p.add_argument("--model", help="a registered model name or an .onnx path (default: the shipped model)")
    p.add_argument("--runtime", help=RUNTIME_HELP)
    p.add_argument("--threads", type=_threads, help="inference threads (default: OMP_NUM_THREADS or all cores)")
    p.add_argument("--batch-size", type=_batch_size, default=BATCH_SIZE,
                   help=f"images read and answered at a time, 1-{MAX_BATCH_SIZE} (default {BATCH_SIZE}); "
                        f"the model takes at most {MAX_MODEL_INPUTS} inputs (images x views) a call")
    p.add_argument("--no-input-check", action="store_true",
                   help="answer images the input checks refuse (colour, blank, saturated) and leave turned ones as given, with warnings")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--views", type=_views, default=1, help=VIEWS_HELP)
    p.add_argument("--output", metavar="RESULTS",
                   help="write results to a .csv, .jsonl or .parquet file as they are made (Parquet: extra parquet)")
    p.add_argument("--resume", action="store_true", help="with --output: skip the inputs it already holds")
    p.add_argument("--force", action="store_true", help="with --output or --plot: replace an existing file")
    p.add_argument("--plot", metavar="CHART.png",
                   help="one FILE with --age: draw its growth chart against the reference (extra: plot); "
                        "exit 2 when it cannot be drawn")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this machine's cores (default); ray: a Ray cluster's (extra: ray)")
    p.add_argument("--ray-address", metavar="ADDRESS",
                   help="with --engine ray: the cluster to join (default: RAY_ADDRESS, else a new local Ray)")
    p.add_argument("--actors", type=_positive, help="with --engine ray: model actors, one core each (default: every core)")


def _explain(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="one radiograph (PNG, JPEG, TIFF, BMP; DICOM with the extra dicom)")
    p.add_argument("--sex", type=_sex, metavar="{male,female,m,f,1,0}",
                   help="male/female (M/F, 1/0, true/false; default: a DICOM's PatientSex)")
    p.add_argument("--age", help="the child's age: months (123) or years and months (10y3m)")
    p.add_argument("--dob", metavar="YYYY-MM-DD", help="date of birth (with --study-date, instead of --age)")
    p.add_argument("--study-date", metavar="YYYY-MM-DD", help="the date the radiograph was taken (with --dob)")
    p.add_argument("--output", required=True, metavar="HEAT.png", help="the PNG to write: radiograph and heatmap")
    p.add_argument("--force", action="store_true", help="replace an existing --output")
    p.add_argument("--model", help="a registered model name or an .onnx path (default: the shipped model)")
    p.add_argument("--runtime", help=RUNTIME_HELP)
    p.add_argument("--threads", type=_threads, help="inference threads (default: OMP_NUM_THREADS or all cores)")
    p.add_argument("--json", action="store_true", help="print the prediction as JSON instead of a table")
    p.add_argument("--no-input-check", action="store_true",
                   help="answer images the input checks refuse (colour, blank, saturated) and leave turned ones as given, with warnings")


def _train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML, YAML or JSON training config")
    p.add_argument("--backbone", help="a registered backbone (see `boneage backbones`)")
    p.add_argument("--data", action="append", metavar="LABELS.csv:IMAGES_DIR", help="a data source; repeatable")
    p.add_argument("--input-size", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=_batch_size, help=f"images per training step, 1-{MAX_BATCH_SIZE}")
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--steps-per-epoch", type=int)
    p.add_argument("--limit", type=int, help="train on only this many images")
    p.add_argument("--val-limit", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--init-weights", metavar="MODEL.keras",
                   help="fine-tune: start from a trained model's weights (same backbone)")
    p.add_argument("--output", help="the run folder: new or empty, or a run to continue with --resume")
    p.add_argument("--time-limit", metavar="DURATION",
                   help="stop cleanly (resumable) before this much training time: 90s, 45m, 2h25m or seconds")
    p.add_argument("--fit-epochs-to-time", action="store_true", default=None,
                   help="with --time-limit: fit the whole schedule into it (--epochs is then the most)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key, dotted; JSON values")
    p.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")


def _evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="an exported .onnx, a registered model name, or a .keras in a run folder")
    p.add_argument("--data", action="append", required=True, metavar="LABELS.csv:IMAGES_DIR")
    p.add_argument("--ids", help="evaluate only these ids: a run's data.json (its validation ids) or a text file")
    p.add_argument("--output", required=True, help="folder for report.json, summary.md and plots")
    p.add_argument("--runtime", help=RUNTIME_HELP)
    p.add_argument("--limit", type=_positive, help="evaluate only the first N labelled images (N >= 1)")
    p.add_argument("--views", type=_views, default=1, help=VIEWS_HELP)
    p.add_argument("--force", action="store_true", help="overwrite the reports already in --output")


def _export(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="a run folder, or a .keras file inside one")
    p.add_argument("--version", required=True, help="semantic version X.Y.Z")
    p.add_argument("--name", help="model name: letters, digits, . _ - (default boneage-<backbone>)")
    p.add_argument("--output", default="exported", help="folder with registry.json (default exported/)")
    p.add_argument("--quantize", choices=["int8"], help="also write an int8 model")
    p.add_argument("--default", action="store_true", help="make it the default model")
    p.add_argument("--force", action="store_true", help="overwrite an existing version")
    p.add_argument("--preprocessing", metavar="STEPS.json",
                   help="ship another preprocessing than the run's (same input size), e.g. another resize")
    p.add_argument("--without-keras", action="store_true",
                   help="leave the .keras out (a lean release; the TensorFlow runtime then needs the run's file)")
    p.add_argument("--float16-weights", action="store_true",
                   help="store the weights in 16 bits, computed in float32: half the file (not with --quantize)")


def _serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--model", help="a registered model name or an .onnx path (default: the shipped model)")
    p.add_argument("--runtime", help=RUNTIME_HELP)
    p.add_argument("--threads", type=_threads, help="inference threads of the shared model (default: OMP_NUM_THREADS or all cores)")
    p.add_argument("--max-concurrent", type=_positive, default=2, help="predictions running at once (default 2)")
    p.add_argument("--queue", type=int, default=16, help="requests waiting for a slot before 503 (default 16)")
    p.add_argument("--max-upload-mb", type=_positive, default=64, help="largest upload accepted, MiB (default 64)")
    p.add_argument("--max-connections", type=_positive, default=100,
                   help="open connections at once; more are answered 503 (default 100)")
    p.add_argument("--read-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="close a connection that has not sent a request's headers within this, or whose body "
                        "brought under 1 KiB/s over this long (default 30)")
    p.add_argument("--views", type=_views, default=1, help=VIEWS_HELP)
    p.add_argument("--no-input-check", action="store_true",
                   help="answer images the input checks refuse (colour, blank, saturated), with warnings")
    p.add_argument("--proxy-headers", action="store_true", help="behind a reverse proxy: trust X-Forwarded-* headers")
    p.add_argument("--forwarded-allow-ips", default="127.0.0.1", help="with --proxy-headers: the proxy's addresses")


def _none(p: argparse.ArgumentParser) -> None:
    pass


COMMANDS: dict[str, tuple[str, str, Configure]] = {
    "predict": ("boneage.cli.predict:run", "bone age of one or many radiographs", _predict),
    "explain": ("boneage.cli.explain:run", "where the model looked: a heatmap over the radiograph", _explain),
    "plugins": ("boneage.cli.listing:plugins", "every registered plugin item and its source", _none),
    "backbones": ("boneage.cli.listing:backbones", "registered backbones with parameter counts", _none),
    "models": ("boneage.cli.listing:models", "the model registry", _none),
    "train": ("boneage.cli.train:run", "train a backbone (extra: train)", _train),
    "evaluate": ("boneage.cli.evaluate:run", "metrics and plots of a model on labelled radiographs", _evaluate),
    "export": ("boneage.cli.export:run", "a trained run -> versioned ONNX model (extra: train)", _export),
    "serve": ("boneage.cli.serve:run", "an HTTP service and web page on one shared model (extra: serve)", _serve),
}


def parser() -> argparse.ArgumentParser:
    """Every sub-command's arguments, built without importing its handler (``--help`` stays fast)."""
    top = argparse.ArgumentParser(prog="boneage", description="Pediatric bone age from hand radiographs.")
    top.add_argument("--version", action="version", version=f"boneage {__version__}")
    top.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text, configure) in COMMANDS.items():
        configure(sub.add_parser(name, help=help_text, description=help_text))
    return top


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool) -> Iterator[None]:
    """C libraries (libpng, libjpeg, TensorFlow, ONNX Runtime) write their warnings straight to file
    descriptor 2: point it at /dev/null while Python's ``sys.stderr`` keeps the terminal, so the user
    sees boneage's messages and not the libraries' noise (``-v`` keeps it)."""
    original = sys.__stderr__
    if not enabled or original is None or sys.stderr is not original:  # e.g. captured by a test harness
        yield
        return
    try:
        original.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):
        yield
        return
    os.dup2(devnull, 2)
    os.close(devnull)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1, encoding=original.encoding, errors="backslashreplace")
    sys.stderr = terminal
    try:
        yield
    finally:
        sys.stderr = original
        terminal.flush()  # left open: a log handler may still hold it
        os.dup2(saved, 2)
        os.close(saved)


class PrintableFormatter(logging.Formatter):
    """Log lines with their control characters escaped, line by line: a plugin's error or a file
    name logged as it is sent escape sequences to the terminal (sixth probe)."""

    def format(self, record: logging.LogRecord) -> str:
        from boneage.errors import printable

        return "\n".join(printable(line) for line in super().format(record).split("\n"))


WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO)  # a disk or device that takes no more


def _stdout_gone() -> int:
    """A reader closed the pipe (``boneage predict ... | head -1``): end quietly, as Unix tools do."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 141  # 128 + SIGPIPE, what a shell reports for a tool that a closed pipe stopped


def _usable_streams() -> None:
    """A closed stderr (``2>&-``) becomes /dev/null, and a terminal that cannot show a file name's
    characters gets escapes instead of an encoding error."""
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, ValueError):
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]


def main(argv: Sequence[str] | None = None) -> int:
    """The ``boneage`` entry point: returns the exit code instead of raising. A :class:`BoneAgeError`
    becomes one line and its ``exit_code``; any other exception exits 70 without a traceback unless
    ``BONEAGE_DEBUG=1``; Ctrl-C exits 130, SIGTERM (handled as Ctrl-C, except by ``serve``, which uvicorn
    stops) 143, and a closed stdout 141."""
    _usable_streams()
    args = parser().parse_args(argv)
    if args.command is None:
        parser().print_help()
        return 2
    if not args.verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    debug = os.environ.get("BONEAGE_DEBUG", "0") not in ("", "0")
    with native_stderr_silenced(not (args.verbose or debug)):
        # after the switch, so that boneage's own log lines reach the terminal
        handler = logging.StreamHandler()
        handler.setFormatter(PrintableFormatter("boneage: %(message)s"))
        logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
        # plugin code's print() kept off stdout (results, --json), Python warnings off the terminal without -v
        with contained_output(args.verbose or debug):
            return _run(args, debug)


def _run(args: argparse.Namespace, debug: bool) -> int:
    module, _, func = COMMANDS[args.command][0].partition(":")
    from boneage.errors import BoneAgeError, printable
    from boneage.signals import interrupt_exit_code, stopped_by, terminate_as_interrupt

    # uvicorn handles SIGTERM itself (a graceful shutdown): serve keeps its handlers
    signals = contextlib.nullcontext() if args.command == "serve" else terminate_as_interrupt()
    try:
        with signals:
            handler = getattr(importlib.import_module(module), func)
            return int(handler(args) or 0)
    except BrokenPipeError:
        return _stdout_gone()
    except BoneAgeError as exc:
        print(f"boneage: error: {printable(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (signals.Terminated)
        print(f"boneage: {stopped_by(exc)}", file=sys.stderr)
        return interrupt_exit_code(exc)
    except OSError as exc:
        if exc.errno not in WRITE_FAILURES or debug:
            print(f"boneage: internal error: {type(exc).__name__}: {printable(str(exc))} (set BONEAGE_DEBUG=1 for a traceback)", file=sys.stderr)
            if debug:
                raise
            return 70
        # stdout on a full disk (> /dev/full): was an internal error, exit 70, then a second one at exit
        _stdout_gone()  # nothing more can be written there, and the exit's flush must not fail again
        with contextlib.suppress(OSError, ValueError):
            print(f"boneage: error: cannot write the results: {exc.strerror}", file=sys.stderr)
        return 2
    except Exception as exc:  # no traceback reaches a user unless asked for
        if debug:
            raise
        print(f"boneage: internal error: {type(exc).__name__}: {printable(str(exc))} (set BONEAGE_DEBUG=1 for a traceback)", file=sys.stderr)
        return 70


if __name__ == "__main__":
    sys.exit(main())
