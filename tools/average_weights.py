"""Average the weights of several checkpoints of one run into one model (issue 14: is the mean of
the last epochs better than the last?).

    python tools/average_weights.py OUT.keras epoch-12.keras epoch-13.keras epoch-14.keras

Every variable is averaged, batch-norm moving statistics included (the usual shortcut; recomputing
them on training batches would be the exact way). The checkpoints must share one architecture;
the first one's compile state and optimizer are dropped. Evaluate the result with
``boneage evaluate OUT.keras --data ... --ids RUN/data.json`` from a folder holding the run's
``config.json``.
"""

from __future__ import annotations

import argparse

import numpy as np

from boneage.cli.arguments import existing_file, new_file, usage_errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=new_file)  # a dangling link too: written through to its target
    parser.add_argument("checkpoints", type=existing_file, nargs="+")
    args = parser.parse_args()

    import keras

    from boneage.training.train import load_saved

    with usage_errors(parser):  # a file that is not a .keras model
        models = [load_saved(path, f"cannot average {path}") for path in args.checkpoints]
    shapes = [[w.shape for w in m.get_weights()] for m in models]
    if any(s != shapes[0] for s in shapes):
        parser.error("the checkpoints do not share one architecture")
    mean = [np.mean(ws, axis=0).astype(ws[0].dtype) for ws in zip(*(m.get_weights() for m in models), strict=True)]
    models[0].set_weights(mean)
    keras.saving.save_model(models[0], args.output)
    print(f"{args.output}: mean of {len(models)} checkpoints")


if __name__ == "__main__":
    main()
