"""``boneage export``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from boneage.defaults import MAX_CONFIG_BYTES
from boneage.errors import ConfigError, printable
from boneage.extras import TRAIN, require
from boneage.files import read_regular_file

if TYPE_CHECKING:
    from boneage.preprocess import PreprocessConfig

EXPORT_NEEDS = ("tensorflow", "keras", "tf2onnx")


def run(args: argparse.Namespace) -> int:
    """Exports a training run (or a .keras in one) as a versioned, registered model; checks the training extra
    first, so a missing package fails before any file is written (:class:`ConfigError` for a bad
    ``--preprocessing`` file)."""
    for module in EXPORT_NEEDS:  # all three, before a model is loaded or a file written
        require(module, TRAIN, "boneage export")
    from boneage.export.export import export_run

    preprocessing = read_preprocessing(args.preprocessing) if args.preprocessing else None
    for entry in export_run(Path(args.source), args.version, Path(args.output), name=args.name, force=args.force,
                            make_default=args.default, quantize=args.quantize, preprocessing=preprocessing,
                            with_keras=not args.without_keras, float16_weights=args.float16_weights):
        note = "" if entry.recommended else "  (not recommended: see its card)"
        print(f"exported {printable(str(Path(args.output) / entry.file))}  sha256 {entry.sha256}  val MAE {entry.metrics.get('mae', float('nan')):.2f}{note}")
    return 0


def read_preprocessing(name: str) -> PreprocessConfig:
    """``--preprocessing STEPS.json``: a regular file of at most 1 MiB (``/dev/zero`` filled memory, a
    FIFO with no writer hung, sixth probe); :class:`ConfigError` for what does not read as steps."""
    from boneage.preprocess import PreprocessConfig

    try:
        text = read_regular_file(Path(name), MAX_CONFIG_BYTES).decode("utf-8-sig")
        return PreprocessConfig.model_validate(json.loads(text))
    except (OSError, ValueError, RecursionError) as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"--preprocessing {name}: {type(exc).__name__}: {exc}") from exc
