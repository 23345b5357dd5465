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
    """Settings of the ``classical`` cropper, as a preprocessing config names them (unknown keys are refused)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    margin: float = Field(0.05, ge=0, le=1, description="added on each side, as a share of the box's width and height")
    min_area: float = Field(0.03, gt=0, lt=1, description="smallest hand, as a share of the image")
    work_size: int = Field(256, ge=32, le=crop.MAX_WORK_SIZE, description="the mask is found at this size, for speed")
    field_extent: float = Field(0.85, gt=0, le=1, description="a region filling this share of its box is an exposure field")


def _largest_region(image: np.ndarray, within: np.ndarray) -> np.ndarray | None:
    """The largest connected region above Otsu's threshold of the pixels ``within``."""
    values = image[within]
    if crop.is_uniform(values):
        return None
    threshold, _ = cv2.threshold(values.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = ((image > threshold) & within).astype(np.uint8) * 255
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return max(contours, key=cv2.contourArea) if contours else None


def _extent(contour: np.ndarray) -> float:
    _, _, w, h = cv2.boundingRect(contour)
    return float(cv2.contourArea(contour)) / max(w * h, 1)


def find_hand(gray: np.ndarray, params: ClassicalParams) -> crop.Box | None:
    """The bounding box of the largest bright region, or None when nothing hand-sized stands out."""
    small, scale = crop.downscale(gray, params.work_size)
    if crop.is_uniform(small):
        return None
    small = cv2.GaussianBlur(small, (5, 5), 0)
    largest = _largest_region(small, np.ones(small.shape, bool))
    if largest is not None and _extent(largest) > params.field_extent:
        # A filled rectangle is the collimated exposure field, not a hand (fingers leave gaps):
        # threshold again among the field's own pixels, where the hand is the brighter part.
        field = np.zeros(small.shape, np.uint8)
        cv2.drawContours(field, [largest], -1, 255, -1)
        inner = _largest_region(small, field > 0)
        if inner is not None and cv2.contourArea(inner) > 0.2 * cv2.contourArea(largest):
            largest = inner
    if largest is None or cv2.contourArea(largest) < params.min_area * small.shape[0] * small.shape[1]:
        return None
    x, y, bw, bh = cv2.boundingRect(largest)
    box = (int(x / scale), int(y / scale), int(np.ceil((x + bw) / scale)), int(np.ceil((y + bh) / scale)))
    return crop.expand(box, params.margin, gray.shape)


def build(params: ClassicalParams) -> Cropper:
    """The cropper for these settings; when no hand is found it keeps the whole image and says so in the trace
    rather than failing: the uncropped radiograph is still a usable input."""
    def cropper(image: np.ndarray, trace: Trace) -> np.ndarray:
        box = find_hand(image, params)
        if box is None:
            trace.warn("no hand found by the classical cropper; the whole image was used")
            return image
        return crop.apply(image, box)

    return cropper


@hookimpl
def boneage_register_croppers() -> list[CropperSpec]:
    """Registers ``classical``, built in like any plugin: the cropper that needs nothing beyond OpenCV."""
    return [CropperSpec(name="classical", build=build, params=ClassicalParams, doc="Otsu threshold + largest region")]
