"""``boneage evaluate``."""

from __future__ import annotations

import argparse
from pathlib import Path

from boneage.cli.train import source
from boneage.errors import printable


def run(args: argparse.Namespace) -> int:
    """Evaluate a model on one or more labelled sets, writing the reports into ``--output`` and printing its
    ``summary.md``; exit code 2 when some images could not be read (they are listed in the reports)."""
    from boneage.evaluation import evaluate, read_ids
    from boneage.training.config import DataSource

    result = evaluate(args.model, [DataSource.model_validate(source(d)) for d in args.data], Path(args.output),
                      runtime=args.runtime, ids=read_ids(Path(args.ids)) if args.ids else None, limit=args.limit,
                      force=args.force, views=args.views)
    print("\n".join(printable(line) for line in (Path(args.output) / "summary.md").read_text().split("\n")))
    return 0 if not result["failures"] else 2
