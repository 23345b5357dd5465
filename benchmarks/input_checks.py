"""What the input checks (``boneage.preprocess.screening``) do to real radiographs and to images
that are not radiographs, through the public API, and what they cost.

    BONEAGE_DATA=../shared/data python benchmarks/input_checks.py [MODEL]

Needs scikit-image for its bundled sample images (photographs, a scanned page, text). Prints:
1. every real validation radiograph (rsna-100, rsna-512 ids with ``is_validation``; all 12
   full-resolution ones): how many are refused, turned, or flagged as mirrored or of uncertain
   orientation;
2. rsna-512 validation ids and the 12 full-resolution radiographs turned by 0/90/180/270 degrees:
   MAE with the checks and without them (``check_input=False``, which answers as before);
3. per kind of non-radiograph: refused (typed error), flagged (a warning), answered silently;
4. the time of the checks against the time of ``predict`` on the 12 full-resolution radiographs.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from boneage import BoneAgeEstimator, extras
from boneage.cli.arguments import ENV_HINT, require, usage_errors
from boneage.errors import BoneAgeError, NotARadiographError
from boneage.prediction import Prediction
from boneage.preprocess.builtin import to_uint8_gray
from boneage.preprocess.crop import downscale
from boneage.preprocess.pipeline import Notes
from boneage.preprocess.screening import CHECK_SIZE, screen
from boneage.training.data import is_validation

DATA = Path(os.environ.get("BONEAGE_DATA", "../shared/data"))


def radiographs(folder: str, validation_only: bool) -> tuple[list[np.ndarray], np.ndarray, list[bool]]:
    with (DATA / folder / "labels.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if not validation_only or is_validation(r["id"], 0.1, 42)]
    images = [np.asarray(cv2.imread(str(DATA / folder / f"{r['id']}.png"), cv2.IMREAD_GRAYSCALE)) for r in rows]
    return images, np.array([float(r["boneage"]) for r in rows]), [r["male"] == "1" for r in rows]


def outcomes(estimator: BoneAgeEstimator, images: list[np.ndarray], male: list[bool]) -> list[Prediction | BoneAgeError]:
    return list(estimator.predict_many(images, male, workers=0))


def real(estimator: BoneAgeEstimator) -> None:
    print("| radiographs | n | refused | turned | mirrored flag | uncertain flag |\n|---|---|---|---|---|---|")
    for name, (folder, validation_only) in {"rsna-100 validation": ("rsna-100", True), "rsna-512 validation": ("rsna-512", True),
                                           "full resolution (all 12)": ("radiographs", False)}.items():
        images, _, male = radiographs(folder, validation_only)
        results = outcomes(estimator, images, male)
        refused = sum(isinstance(r, NotARadiographError) for r in results)
        ok = [r for r in results if isinstance(r, Prediction)]
        turned = sum(any("to upright" in n for n in r.notes) for r in ok)
        mirrored = sum(any("mirrored" in w for w in r.warnings) for r in ok)
        uncertain = sum(any("orientation is uncertain" in w for w in r.warnings) for r in ok)
        print(f"| {name} | {len(images)} | {refused} | {turned} | {mirrored} | {uncertain} |", flush=True)


def turned(checked: BoneAgeEstimator, unchecked: BoneAgeEstimator) -> None:
    a, ya, ma = radiographs("rsna-512", True)
    b, yb, mb = radiographs("radiographs", False)
    images, truth, male = a + b, np.concatenate([ya, yb]), ma + mb
    print("\n| shown turned by | MAE with the checks | without (as before) | turned back |\n|---|---|---|---|")
    for turns in range(4):
        shown = [np.ascontiguousarray(np.rot90(i, turns)) for i in images]
        with_checks = checked.predict_batch(shown, male)
        without = unchecked.predict_batch(shown, male)
        back = sum(any("to upright" in n for n in p.notes) for p in with_checks)
        mae = [float(np.mean(np.abs(np.array([p.bone_age_months for p in r]) - truth))) for r in (with_checks, without)]
        print(f"| {90 * turns} degrees | {mae[0]:.2f} | {mae[1]:.2f} | {back} of {len(images)} |", flush=True)


def document(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    page = np.full((int(rng.integers(300, 900)), int(rng.integers(300, 900))), int(rng.integers(200, 256)), np.uint8)
    y = 30
    while y < page.shape[0] - 10:
        words = " ".join("".join(chr(int(c)) for c in rng.integers(97, 123, int(rng.integers(2, 9))))
                         for _ in range(int(rng.integers(3, 12))))
        scale = float(rng.uniform(0.4, 1.2))
        cv2.putText(page, words, (10, y), int(rng.choice([0, 1, 2, 3, 4, 6, 7])), scale, int(rng.integers(0, 80)),
                    1 + int(scale > 0.9), cv2.LINE_AA)
        y += int(30 * scale + rng.integers(5, 20))
    return page


def noise(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (300, 300)).astype(np.uint8)
    return np.asarray(cv2.GaussianBlur(image, (0, 0), float(rng.uniform(0.5, 8)))) if seed % 2 else image


def shapes(seed: int, colour: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.full((300, 300, 3) if colour else (300, 300), int(rng.integers(0, 60)), np.uint8)
    for _ in range(int(rng.integers(1, 6))):
        value = tuple(int(v) for v in rng.integers(60, 256, 3)) if colour else int(rng.integers(100, 256))
        cv2.circle(image, tuple(int(v) for v in rng.integers(0, 300, 2)), int(rng.integers(10, 100)), value, -1)
        p = rng.integers(0, 300, 4)
        cv2.rectangle(image, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), value, -1)
    return image


def extreme(seed: int) -> np.ndarray:
    """Almost all white (over-exposed) or almost all black with a small object."""
    rng = np.random.default_rng(seed)
    background, thing = (255, int(rng.integers(0, 200))) if seed % 2 else (0, int(rng.integers(60, 256)))
    image = np.full((300, 240), background, np.uint8)
    return np.asarray(cv2.circle(image, (120, 150), int(rng.integers(5, 25)), thing, -1))


def negatives() -> dict[str, list[np.ndarray]]:
    import skimage
    from skimage import data

    folder = Path(skimage.__file__).parent / "data"
    samples = [np.asarray(cv2.imread(str(p), cv2.IMREAD_UNCHANGED)) for p in sorted(folder.glob("*.png")) + sorted(folder.glob("*.jpg"))]
    samples = [s[..., 2::-1] if s.ndim == 3 else s for s in samples if s is not None and s.size > 1]
    grey_photos = [s for s in samples if s.ndim == 2] + [cv2.resize((f * 255).astype(np.uint8), (100, 100)) for f in data.lfw_subset()]  # type: ignore[no-untyped-call]
    val, _, _ = radiographs("rsna-512", True)
    return {
        "colour photographs (scikit-image samples)": [s for s in samples if s.ndim == 3],
        "colour shapes (synthetic)": [shapes(i, colour=True) for i in range(50)],
        "radiographs in a false-colour map": [cv2.applyColorMap(v, cv2.COLORMAP_JET) for v in val[:20]],
        "blank, constant 0-255": [np.full((300, 240), v, np.uint8) for v in range(0, 256, 15)],
        "almost all white or black": [extreme(i) for i in range(40)],
        "documents (cv2.putText)": [document(i) for i in range(50)],
        "grey photographs (scikit-image samples, LFW faces)": grey_photos,
        "noise (uniform, blurred)": [noise(i) for i in range(50)],
        "grey shapes (synthetic)": [shapes(i) for i in range(50)],
    }


def detections(estimator: BoneAgeEstimator) -> None:
    print("\n| not a radiograph | n | refused | flagged | answered silently |\n|---|---|---|---|---|")
    for kind, images in negatives().items():
        results = outcomes(estimator, images, [True] * len(images))
        refused = sum(isinstance(r, NotARadiographError) for r in results)
        flagged = sum(isinstance(r, Prediction) and bool(r.warnings) for r in results)
        print(f"| {kind} | {len(images)} | {refused} | {flagged} | {len(images) - refused - flagged} |", flush=True)


def latency(estimator: BoneAgeEstimator) -> None:
    images, _, male = radiographs("radiographs", False)

    def per_image(f: Callable[[np.ndarray, bool], object]) -> float:
        best = []
        for image, m in zip(images, male, strict=True):
            times = []
            for _ in range(5):
                start = time.perf_counter()
                f(image, m)
                times.append(time.perf_counter() - start)
            best.append(min(times))
        return 1000 * float(np.median(best))

    checks = per_image(lambda image, m: screen(image, Notes()))
    copy = per_image(lambda image, m: downscale(to_uint8_gray(image), CHECK_SIZE))  # made before these checks too
    total = per_image(lambda image, m: estimator.predict(image, m))
    print(f"\nfull resolution (12, median of best of 5): predict {total:.1f} ms; the checks {checks:.1f} ms, of which "
          f"{copy:.1f} ms make the working copy that input_warnings made before and now reuses: "
          f"{checks - copy:.1f} ms added ({100 * (checks - copy) / total:.0f}% of predict)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", help="a registered model or an .onnx path (default: the default model)")
    args = parser.parse_args()
    labels = [DATA / folder / "labels.csv" for folder in ("rsna-100", "rsna-512", "radiographs")]
    require(parser, *labels, hint=ENV_HINT)
    with usage_errors(parser):  # a model that is not there, scikit-image missing
        extras.require("skimage", "pip install scikit-image", "the sample images that are not radiographs")
        checked, unchecked = BoneAgeEstimator(args.model), BoneAgeEstimator(args.model, check_input=False)
    real(checked)
    turned(checked, unchecked)
    detections(checked)
    latency(checked)


if __name__ == "__main__":
    main()
