"""The built-in preprocessing steps, registered through the same hook as any plugin's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from boneage.hookspecs import hookimpl
from boneage.preprocess.clahe import clahe_float
from boneage.preprocess.inversion import looks_inverted
from boneage.preprocess.pipeline import build_item, validated
from boneage.specs import CropperSpec, EmptyParams, StepSpec, Trace, Transform

if TYPE_CHECKING:
    from boneage.plugins import Plugins

INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "nearest_exact": cv2.INTER_NEAREST_EXACT,  # PIL's nearest: how the RSNA 100-px images were made
    "linear": cv2.INTER_LINEAR,
    "area": cv2.INTER_AREA,
    "cubic": cv2.INTER_CUBIC,
    "lanczos": cv2.INTER_LANCZOS4,
}


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def to_uint8_gray(image: np.ndarray) -> np.ndarray:
    """One 8-bit channel. A 16-bit image is read as 16 bits (value / 257, rounded: a 16-bit copy of an 8-bit
    image, x * 257, gives that image exactly), never stretched by its own minimum and maximum, so one picture
    gets one answer whatever holds it. Images whose values use fewer of their 16 bits (10, 12 or 14 bits, a
    PNG's sBIT, a PGM's maxval) were scaled to the 16-bit range when they were read
    (:func:`boneage.decoded.full_range`), and a DICOM's display mapping gives 16-bit grey levels itself
    (:mod:`boneage.dicom`). Float images in [0, 1] are scaled by 255."""
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 1:
            image = image[..., 0]
        else:
            image = cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        # In one pass with no float copy (an 8000x8000 16-bit image would otherwise hold 256 MB float
        # temporaries): OpenCV rounds to nearest and saturates.
        return np.asarray(cv2.convertScaleAbs(image, alpha=1.0 / 257.0))
    out: np.ndarray = np.clip(np.rint(image.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    return out


def _grayscale(params: EmptyParams) -> Transform:
    return lambda image, trace: to_uint8_gray(image)


class ResizeParams(_Params):
    """``resize``: ``size`` is the side of the square in pixels; it must match the model's input, so
    the model card's copy is what decides it. The RSNA-trained models used ``stretch`` with
    ``nearest_exact``."""

    size: int = Field(256, ge=8, le=2048)
    mode: Literal["pad", "stretch"] = "pad"
    interpolation: Literal["nearest", "nearest_exact", "linear", "area", "cubic", "lanczos"] = "area"
    keep_float: bool = Field(False, description="resize in float and give float32 (0-255), not rounded to 8 bits, "
                             "also when no resize is needed: for clahe's keep_float, whose steep tables turned "
                             "rounding into whole grey levels")


def resize(image: np.ndarray, params: ResizeParams) -> np.ndarray:
    """``stretch`` squashes to a square; ``pad`` keeps the aspect ratio and pads with black."""
    size, interp = params.size, INTERPOLATIONS[params.interpolation]
    if params.keep_float and image.dtype != np.float32:
        # cv2.resize rounds an 8-bit image's result to 8 bits; float32 every time, so that images of any
        # size give one kind of array (training holds them in one stack)
        image = image.astype(np.float32) / np.float32(257.0 if image.dtype == np.uint16 else 1.0)
    if params.mode == "stretch":
        if image.shape[:2] == (size, size):
            return image
        return np.asarray(cv2.resize(image, (size, size), interpolation=interp))
    h, w = image.shape[:2]
    scale = size / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=interp) if (new_h, new_w) != (h, w) else image
    out = np.zeros((size, size, *image.shape[2:]), dtype=image.dtype)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top : top + new_h, left : left + new_w] = resized
    return out


def _resize(params: ResizeParams) -> Transform:
    return lambda image, trace: resize(image, params)


class ClaheParams(_Params):
    """``clahe`` on the 8-bit image: OpenCV's clip limit, and the number of tiles per side."""

    clip_limit: float = Field(2.0, gt=0)
    tile_grid: int = Field(8, ge=1, le=64)
    keep_float: bool = Field(False, description="no rounding to 8 bits, of the input, the tables or the output "
                             "(boneage.preprocess.clahe): the answer moves less under crops and rescaling")


def _clahe(params: ClaheParams) -> Transform:
    def apply(image: np.ndarray, trace: Trace) -> np.ndarray:
        if params.keep_float:
            return clahe_float(image, params.clip_limit, params.tile_grid)
        if image.dtype != np.uint8:  # a kept-float resize: OpenCV's CLAHE takes whole grey levels
            image = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        # A CLAHE object per call: OpenCV's are not safe to share between threads.
        clahe = cv2.createCLAHE(clipLimit=params.clip_limit, tileGridSize=(params.tile_grid,) * 2)
        return clahe.apply(image)

    return apply


def _normalize(params: EmptyParams) -> Transform:
    def apply(image: np.ndarray, trace: Trace) -> np.ndarray:
        scale = 65535.0 if image.dtype == np.uint16 else 255.0
        return image.astype(np.float32) / np.float32(scale)

    return apply


class InvertParams(_Params):
    """``invert``: ``auto`` flips only an image that looks inverted (and warns); ``always`` flips every one."""

    mode: Literal["auto", "always"] = "auto"


def _invert(params: InvertParams) -> Transform:
    def apply(image: np.ndarray, trace: Trace) -> np.ndarray:
        image = to_uint8_gray(image)  # the test and the flip below are on the 8-bit scale
        if params.mode == "always" or looks_inverted(image):
            if params.mode == "auto":
                trace.warn("the image looked inverted (bright background) and was inverted back")
            return 255 - image
        return image

    return apply


class HandCropParams(_Params):
    """``hand_crop``: a registered cropper by name, and its own options (checked against its params
    when the pipeline is built, so a typo fails at load, not on the first image)."""

    cropper: str = "classical"
    options: dict[str, object] = Field(default_factory=dict)


def _hand_crop(params: HandCropParams, plugins: Plugins) -> Transform:
    """The cropper comes from the registry the pipeline was built from (``takes_plugins``)."""
    spec: CropperSpec = plugins.get("croppers", params.cropper).spec
    cropper = build_item(spec, validated(spec.params, dict(params.options), f"cropper {params.cropper!r}"), plugins)
    return lambda image, trace: cropper(image, trace)


@hookimpl
def boneage_register_preprocess_steps() -> list[StepSpec]:
    """Registers the built-in steps through the plugin API, as a third-party step would be."""
    return [
        StepSpec(name="grayscale", build=_grayscale, doc="one 8-bit channel (16-bit read as value / 257)"),
        StepSpec(name="invert", build=_invert, params=InvertParams, doc="undo a white-background (inverted) radiograph"),
        StepSpec(name="hand_crop", build=_hand_crop, params=HandCropParams, takes_plugins=True,
                 doc="crop to the hand with a registered cropper"),
        StepSpec(name="clahe", build=_clahe, params=ClaheParams, doc="contrast-limited adaptive histogram equalization"),
        StepSpec(name="resize", build=_resize, params=ResizeParams, doc="to a square: aspect-preserving pad, or stretch"),
        StepSpec(name="normalize", build=_normalize, doc="to float32 in [0,1]"),
    ]
