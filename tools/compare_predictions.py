"""Is model B better than model A on the same images, by more than the sample's noise? (issue 14's
release rule). Reads two predictions.csv files written by `boneage evaluate` (id, boneage, male,
predicted), pairs them by id, and prints MAE(B) - MAE(A) with a 95% bootstrap interval over the
images (boneage.metrics.paired_difference).

    python tools/compare_predictions.py A/predictions.csv B/predictions.csv [--resamples 10000]

Both files must hold the same ids with the same true ages: a comparison over different images
measures the images, not the models. An id that occurs twice (evaluate over rsna-512 and
radiographs/ scores the same hand at two resolutions) is paired by its order in each file.
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

from boneage.cli.arguments import existing_file, positive
from boneage.columns import csv_rows
from boneage.metrics import paired_difference


def read(parser: argparse.ArgumentParser, path: Path) -> dict[tuple[str, int], tuple[float, float]]:
    """(id, its occurrence: 1, 2, ...) -> (true age, predicted age); a usage error for anything that is not
    evaluate's predictions.csv."""
    try:
        rows = csv_rows(path.read_bytes())
        pairs = [(row.cells["id"], float(row.cells["boneage"] or ""), float(row.cells["predicted"] or ""))
                 for row in rows]
    except (OSError, UnicodeDecodeError, csv.Error, ValueError, KeyError, TypeError) as exc:
        parser.error(f"{path} is not a predictions.csv of boneage evaluate ({type(exc).__name__}: {exc})")
    if any(not i for i, _, _ in pairs):
        parser.error(f"{path} has a row without an id")
    if not all(math.isfinite(x) for _, true, predicted in pairs for x in (true, predicted)):
        parser.error(f"{path} holds an age that is not a finite number")
    seen: dict[str, int] = {}
    keyed = {}
    for i, true, predicted in pairs:
        seen[str(i)] = seen.get(str(i), 0) + 1
        keyed[(str(i), seen[str(i)])] = (true, predicted)
    return keyed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=existing_file, help="predictions.csv of model A (the one shipped)")
    parser.add_argument("b", type=existing_file, help="predictions.csv of model B (the candidate)")
    parser.add_argument("--resamples", type=positive, default=10_000, help="bootstrap resamples (default 10000)")
    args = parser.parse_args()
    a, b = read(parser, args.a), read(parser, args.b)
    if a.keys() != b.keys():
        parser.error(f"the files hold different ids ({len(a.keys() - b.keys())} only in A, "
                     f"{len(b.keys() - a.keys())} only in B)")
    ids = sorted(a)
    if len(ids) < 2 or any(a[i][0] != b[i][0] for i in ids):
        parser.error("the files need at least two ids, each with the same true age in both")
    r = paired_difference([a[i][0] for i in ids], [a[i][1] for i in ids], [b[i][1] for i in ids],
                          resamples=args.resamples)
    print(f"{r['n']} images: MAE A {r['mae_a']:.2f}, B {r['mae_b']:.2f}; B - A {r['difference']:+.2f} months, "
          f"95% interval [{r['low']:+.2f}, {r['high']:+.2f}]; B closer on {r['b_closer']:.0%} of images")


if __name__ == "__main__":
    main()
