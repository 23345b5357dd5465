"""``boneage train``: a config file with command-line overrides on top."""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any

from boneage.errors import ConfigError
from boneage.extras import TRAIN_ANY_BACKEND, require


def source(text: str) -> dict[str, str]:
    """A ``--data LABELS.csv:IMAGES_DIR`` argument as a data source dict; :class:`~boneage.errors.ConfigError`
    without the colon."""
    labels, sep, images = text.partition(":")
    if not sep:
        raise ConfigError(f"--data wants LABELS.csv:IMAGES_DIR, not {text!r}")
    return {"labels": labels, "images": images}


DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?")


def duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``45m``, ``2h`` or ``2h25m``; a number past floats (400 digits) is refused,
    not taken as an infinite limit."""
    match = DURATION.fullmatch(text.strip())
    seconds = sum(float(v) * unit for v, unit in zip(match.groups(), (3600, 60, 1), strict=True) if v) if match else 0.0
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"--time-limit wants a duration such as 90s, 45m, 2h or 2h25m, not {text!r}")
    return seconds


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config values given on the command line (None: not given, the config file decides); each
    ``--set KEY=VALUE`` is read as JSON when it parses, else kept as text. :class:`~boneage.errors.ConfigError` for
    a ``--set`` without ``=``."""
    out: dict[str, Any] = {
        "backbone": args.backbone, "input_size": args.input_size, "epochs": args.epochs,
        "batch_size": args.batch_size, "learning_rate": args.learning_rate,
        "steps_per_epoch": args.steps_per_epoch, "limit": args.limit, "val_limit": args.val_limit,
        "seed": args.seed, "output_dir": args.output, "init_weights": args.init_weights,
        "time_limit": duration(args.time_limit) if args.time_limit else None,
        "fit_epochs_to_time": args.fit_epochs_to_time,
        "sources": [source(d) for d in args.data] if args.data else None,
    }
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set wants KEY=VALUE, not {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
        except RecursionError as exc:  # [[[[... 100,000 deep was an internal error (exit 70)
            raise ConfigError(f"--set {key[:40]}: its value nests deeper than a config can") from exc
    return out


def run(args: argparse.Namespace) -> int:
    """Train from ``--config`` (or, with ``--resume``, the run folder's own ``config.json``) and the flags on top.

    The training extra is checked first, so a missing Keras is reported before a config error."""
    require("keras", TRAIN_ANY_BACKEND, "boneage train")  # before the config is read: the fix comes first
    from boneage.training.config import load_config
    from boneage.training.train import train

    path = Path(args.config) if args.config else None
    if args.resume and path is None:
        if not args.output:
            raise ConfigError("--resume needs --output RUN_FOLDER")
        path = Path(args.output) / "config.json"  # the run's own config, with any flags on top
    config = load_config(path, overrides(args))
    run_dir = train(config, resume=args.resume)
    best = run_dir / "best.keras"
    print(f"run saved in {run_dir} " + (f"(best model: {best})" if best.is_file() else "(no finished epoch yet)"))
    return 0
