"""``boneage export``."""

from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from boneage.export.export import export_run

    for entry in export_run(Path(args.source), args.version, Path(args.output), name=args.name, force=args.force,
                            make_default=args.default, quantize=args.quantize):
        note = "" if entry.recommended else "  (not recommended: see its card)"
        print(f"exported {Path(args.output) / entry.file}  sha256 {entry.sha256}  val MAE {entry.metrics.get('mae', float('nan')):.2f}{note}")
    return 0
