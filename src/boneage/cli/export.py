"""``boneage export``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from boneage.errors import ConfigError
from boneage.extras import TRAIN, require

EXPORT_NEEDS = ("tensorflow", "keras", "tf2onnx")


def run(args: argparse.Namespace) -> int:
    """Exports a training run (or a .keras in one) as a versioned, registered model; checks the training extra
    first, so a missing package fails before any file is written (:class:`ConfigError` for a bad
    ``--preprocessing`` file)."""
    for module in EXPORT_NEEDS:  # all three, before a model is loaded or a file written
        require(module, TRAIN, "boneage export")
    from boneage.export.export import export_run
    from boneage.preprocess import PreprocessConfig

    preprocessing = None
    if args.preprocessing:
        try:
            preprocessing = PreprocessConfig.model_validate(json.loads(Path(args.preprocessing).read_text()))
        except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            raise ConfigError(f"--preprocessing {args.preprocessing}: {exc}") from exc
    for entry in export_run(Path(args.source), args.version, Path(args.output), name=args.name, force=args.force,
                            make_default=args.default, quantize=args.quantize, preprocessing=preprocessing,
                            with_keras=not args.without_keras):
        note = "" if entry.recommended else "  (not recommended: see its card)"
        print(f"exported {Path(args.output) / entry.file}  sha256 {entry.sha256}  val MAE {entry.metrics.get('mae', float('nan')):.2f}{note}")
    return 0
