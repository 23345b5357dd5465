"""The classical hand cropper: Otsu threshold, the largest bright region, a margin.

Always available and deterministic; the fallback when MediaPipe is not.
"""

from __future__ import annotations

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from boneage.hookspecs import hookimpl
from boneage.preprocess import crop
from boneage.specs import Cropper, CropperSpec, Trace


class ClassicalParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    margin: float = Field(0.05, ge=0, le=1)
    min_area: float = Field(0.03, gt=0, lt=1, description="smallest hand, as a share of the image")
    work_size: int = Field(256, ge=32, description="the mask is found at this size, for speed")


def find_hand(gray: np.ndarray, params: ClassicalParams) -> crop.Box | None:
    """The bounding box of the largest bright region, or None when nothing hand-sized stands out."""
    h, w = gray.shape[:2]
    scale = min(1.0, params.work_size / max(h, w))
    small = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if int(small.max()) - int(small.min()) < 16:
        return None  # blank or uniform
    small = cv2.GaussianBlur(small, (5, 5), 0)
    _, mask = cv2.threshold(small, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    kernel = np.ones((5, 5), np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    largest = max(contours, key=cv2.contourArea)
    if cv2.contourArea(largest) < params.min_area * small.shape[0] * small.shape[1]:
        return None
    x, y, bw, bh = cv2.boundingRect(largest)
    box = (int(x / scale), int(y / scale), int(np.ceil((x + bw) / scale)), int(np.ceil((y + bh) / scale)))
    return crop.expand(box, params.margin, gray.shape)


def build(params: ClassicalParams) -> Cropper:
    def cropper(image: np.ndarray, trace: Trace) -> np.ndarray:
        box = find_hand(image, params)
        if box is None:
            trace.warn("no hand found by the classical cropper; the whole image was used")
            return image
        return crop.apply(image, box)

    return cropper


@hookimpl
def boneage_register_croppers() -> list[CropperSpec]:
    return [CropperSpec("classical", build, ClassicalParams, doc="Otsu threshold + largest region")]
