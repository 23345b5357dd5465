"""Seconds per radiograph for ``BoneAgeEstimator.explain`` (occlusion sensitivity), end to end:
reading, preprocessing, every occluded copy through the one ONNX Runtime session, the heatmap.

    BONEAGE_DATA=../shared/data python benchmarks/explain_speed.py [MODEL] --threads 2 --images 8

Also prints ``predict`` on the same images, and the mean heat inside the hand (Otsu on the model
input) against the dark background: the check that the map points at the hand.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from boneage.cli.arguments import ENV_HINT, pngs, positive, usage_errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model", nargs="?")
    parser.add_argument("--threads", type=positive, default=None)
    parser.add_argument("--images", type=positive, default=8)
    args = parser.parse_args()
    folder = Path(os.environ.get("BONEAGE_DATA", "../shared/data")) / "rsna-512"
    paths = pngs(parser, folder, hint=ENV_HINT)[: args.images]

    import cv2

    from boneage import BoneAgeEstimator
    from boneage.explain import positions

    with usage_errors(parser):  # a model that is not there
        estimator = BoneAgeEstimator(args.model, threads=args.threads)
    estimator.explain(paths[0], male=True)  # warm-up: the session's first call allocates
    explain_s, predict_s, ratios = [], [], []
    for path in paths:
        t = time.perf_counter()
        ex = estimator.explain(path, male=True)
        explain_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        estimator.predict(path, male=True)
        predict_s.append(time.perf_counter() - t)
        gray = np.rint(ex.model_input * 255).astype(np.uint8)
        _, hand = cv2.threshold(gray, 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        ratios.append(float(ex.heatmap[hand == 1].mean() / max(ex.heatmap[hand == 0].mean(), 1e-6)))
    print(f"{estimator.card.ref}, {len(paths)} rsna-512 images, {ex.patch} px patch, stride {ex.stride}, "
          f"{len(positions(ex.heatmap.shape[0], ex.patch, ex.stride)) ** 2} occluded copies")
    print(f"explain: median {np.median(explain_s):.2f} s, max {max(explain_s):.2f} s per radiograph")
    print(f"predict: median {np.median(predict_s) * 1000:.0f} ms per radiograph")
    print(f"heat in the hand / on the background: median {np.median(ratios):.1f}x, min {min(ratios):.1f}x")


if __name__ == "__main__":
    main()
