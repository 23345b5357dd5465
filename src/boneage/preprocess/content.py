"""Is there a radiograph to read at all? Cheap rules on the image and its small grayscale working
copy that refuse what cannot be a radiograph: colour (radiographs are grey), a blank or constant
image, and one that is almost all black or all white. Each limit sits well outside what the
1,302 real validation radiographs show (measured in ``tests/test_orientation.py`` and
docs/reliability.md); documents, grey photographs and other body parts are not caught here."""

from __future__ import annotations

import cv2
import numpy as np

from boneage.preprocess.crop import downscale, is_uniform

COLOURFUL = 15.0  # Hasler & Suesstrunk's colourfulness: about 15 is "slightly colourful", a grey image 0
EXTREME_SHARE = 0.95  # real radiographs: at most 0.85 of the working copy at 0-5 (a small hand on
# black padding) and 0.10 at 250-255; the limit holds for inverted ones too (the same shares swapped)


def colourfulness(image: np.ndarray, work_size: int = 256) -> float:
    """0 for any grey image (also one stored as RGB); computed on a copy at most ``work_size`` a side."""
    if image.ndim != 3 or image.shape[2] < 3:
        return 0.0
    rgb = image[..., :3]
    if rgb.dtype == np.uint16:
        rgb = (rgb >> 8).astype(np.uint8)
    elif rgb.dtype != np.uint8:
        rgb = np.clip(rgb * 255.0, 0, 255).astype(np.uint8)
    h, w = rgb.shape[:2]
    scale = min(1.0, work_size / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(np.ascontiguousarray(rgb), (max(1, round(w * scale)), max(1, round(h * scale))),
                         interpolation=cv2.INTER_AREA)
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def problems(image: np.ndarray, gray: np.ndarray) -> list[str]:
    """Why ``image`` cannot be a radiograph (empty when it may be one). ``gray``: its 8-bit
    grayscale working copy."""
    small, _ = downscale(gray, 256)
    if is_uniform(small):
        return ["the image is blank or nearly uniform"]
    found = []
    colour = colourfulness(image)
    if colour >= COLOURFUL:
        found.append(f"the image is in colour (colourfulness {colour:.0f}; a radiograph is grey)")
    if float((small <= 5).mean()) >= EXTREME_SHARE:
        found.append("the image is almost all black")
    if float((small >= 250).mean()) >= EXTREME_SHARE:
        found.append("the image is almost all saturated white")
    return found
