"""How often each hand cropper finds the hand on real radiographs, and how big its box is.

    BONEAGE_DATA=../shared/data python benchmarks/croppers.py --model ../shared/models/hand_landmarker.task

Writes a markdown table to stdout and docs/img/crops.png. There is no ground-truth box, so
"tightness" is reported as the box's share of the image and the agreement (IoU) between the
two croppers where both found a hand.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np

from boneage.cli.arguments import existing_file, output_file, pngs, positive, usage_errors
from boneage.extras import require
from boneage.preprocess.crop import Box
from boneage.preprocess.crop_classical import ClassicalParams, find_hand
from boneage.preprocess.crop_mediapipe import _landmarker, detect


def iou(a: Box, b: Box) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / float(area(a) + area(b) - inter)


def share(box: Box | None, shape: tuple[int, ...]) -> float:
    return 0.0 if box is None else (box[2] - box[0]) * (box[3] - box[1]) / float(shape[0] * shape[1])


VARIANTS = {
    "as stored": lambda g: g,
    "inverted": lambda g: 255 - g,
    "CLAHE": lambda g: cv2.createCLAHE(2.0, (8, 8)).apply(g),
    "CLAHE + inverted": lambda g: 255 - cv2.createCLAHE(2.0, (8, 8)).apply(g),
}


def measure(paths: list[Path], landmarker: object) -> tuple[list[str], dict[str, list[Box | None]]]:
    boxes: dict[str, list[Box | None]] = {"classical": []} | {f"mediapipe, {v}": [] for v in VARIANTS}
    times: dict[str, float] = dict.fromkeys(boxes, 0.0)
    for path in paths:
        gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        t = time.perf_counter()
        boxes["classical"].append(find_hand(gray, ClassicalParams()))
        times["classical"] += time.perf_counter() - t
        for name, fn in VARIANTS.items():
            t = time.perf_counter()
            boxes[f"mediapipe, {name}"].append(detect(landmarker, fn(gray), 384))
            times[f"mediapipe, {name}"] += time.perf_counter() - t
    shapes = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).shape for p in paths]
    rows = []
    for name, found in boxes.items():
        hits = [i for i, b in enumerate(found) if b is not None]
        shares = [share(found[i], shapes[i]) for i in hits]
        agree = [iou(found[i], boxes["classical"][i]) for i in hits if boxes["classical"][i] is not None]
        rows.append(
            f"| {name} | {len(hits)}/{len(paths)} ({100 * len(hits) / len(paths):.0f}%) | "
            f"{np.median(shares) if shares else float('nan'):.2f} | "
            f"{np.median(agree) if agree and name != 'classical' else float('nan'):.2f} | "
            f"{1000 * times[name] / len(paths):.0f} |"
        )
    return rows, boxes


def picture(paths: list[Path], boxes: dict[str, list[Box | None]], out: Path, mp_key: str) -> None:
    tiles = []
    for i, path in enumerate(paths[:8]):
        img = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), cv2.COLOR_GRAY2BGR)
        scale = 256 / max(img.shape[:2])
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        for key, colour in (("classical", (0, 200, 0)), (mp_key, (0, 0, 255))):
            box = boxes[key][i]
            if box is not None:
                x0, y0, x1, y1 = (int(v * scale) for v in box)
                cv2.rectangle(img, (x0, y0), (x1, y1), colour, 2)
        tile = np.zeros((256, 256, 3), np.uint8)
        tile[: img.shape[0], : img.shape[1]] = img
        tiles.append(tile)
    grid = np.vstack([np.hstack(tiles[:4]), np.hstack(tiles[4:8])])
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), grid)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("BONEAGE_DATA", "../shared/data")))
    parser.add_argument("--model", type=existing_file, help="the hand landmarker (default: BONEAGE_MEDIAPIPE_MODEL "
                        "or ../shared/models/hand_landmarker.task)",
                        default=os.environ.get("BONEAGE_MEDIAPIPE_MODEL", "../shared/models/hand_landmarker.task"))
    parser.add_argument("--limit", type=positive, default=200, help="rsna-512 images to use")
    parser.add_argument("--picture", type=output_file, default="docs/img/crops.png")
    args = parser.parse_args()
    found = {folder: pngs(parser, args.data / folder)[:limit] for folder, limit in (("radiographs", None),
                                                                                    ("rsna-512", args.limit))}
    with usage_errors(parser):  # the extra not installed
        require("mediapipe", 'pip install "boneage[mediapipe]"', "the MediaPipe cropper")
    landmarker = _landmarker(args.model, 0.3)
    try:
        for folder, paths in found.items():
            rows, boxes = measure(paths, landmarker)
            print(f"\n### {folder} ({len(paths)} images)\n")
            print("| cropper | hand found | median box share of image | median IoU with classical | ms/image |")
            print("|---|---|---|---|---|")
            print("\n".join(rows))
            if folder == "radiographs":
                best = max((k for k in boxes if k != "classical"), key=lambda k: sum(b is not None for b in boxes[k]))
                picture(paths, boxes, Path(args.picture), best)
                print(f"\n(picture: green classical, red {best})")
    finally:
        landmarker.close()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
