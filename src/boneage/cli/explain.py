"""``boneage explain IMG --sex ... --output heat.png``: the radiograph with where the model looked."""

from __future__ import annotations

import argparse
import json
import sys

from boneage.cli.figures import new_png
from boneage.cli.predict import command_line_age, table
from boneage.estimator import BoneAgeEstimator


def run(args: argparse.Namespace) -> int:
    """Predict one radiograph and save the heatmap PNG; the output path is checked before the model is loaded, so a
    refused ``--output`` costs no inference. The prediction goes to stdout, the note about the heatmap to stderr."""
    output = new_png(args.output, args.force, "--output", args.file)  # refused before the work, not after it
    male, age = args.sex, command_line_age(args)  # None: a DICOM's header
    estimator = BoneAgeEstimator(args.model, runtime=args.runtime, threads=args.threads,
                                 check_input=not args.no_input_check)
    explanation = estimator.explain(args.file, male, age)
    explanation.save(output)
    result = explanation.prediction.model_dump(mode="json")
    print(json.dumps(result, indent=2, allow_nan=False) if args.json else table([result]))
    print(f"boneage: heatmap written to {output} ({explanation.patch} px patches on the "
          f"{explanation.heatmap.shape[0]} px model input{'' if explanation.on_original else ', drawn on the model input'})",
          file=sys.stderr)
    return 0
