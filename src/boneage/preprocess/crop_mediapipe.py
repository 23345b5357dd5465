"""The MediaPipe hand cropper (extra ``mediapipe``), which falls back to the classical one.

MediaPipe Tasks needs a hand landmarker model file, which boneage never downloads: its path comes
from the ``model_path`` option or the ``BONEAGE_MEDIAPIPE_MODEL`` environment variable.
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from boneage.hookspecs import hookimpl
from boneage.preprocess import crop
from boneage.preprocess.crop_classical import ClassicalParams
from boneage.preprocess.crop_classical import build as build_classical
from boneage.specs import Cropper, CropperSpec, Trace

log = logging.getLogger(__name__)
MODEL_ENV = "BONEAGE_MEDIAPIPE_MODEL"
_locks: dict[int, threading.Lock] = {}


class MediaPipeParams(BaseModel):
    """``model_path``: the hand landmarker ``.task`` file (else ``BONEAGE_MEDIAPIPE_MODEL``);
    ``margin``: added around the landmarks' box, as a fraction of its size; ``fallback``: the
    classical cropper's settings, used where MediaPipe finds no hand or cannot run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_path: str | None = None
    min_confidence: float = Field(0.3, ge=0, le=1)
    work_size: int = Field(384, ge=64, le=crop.MAX_WORK_SIZE, description="downscale to this longest side before detection")
    margin: float = Field(0.08, ge=0, le=1)
    fallback: ClassicalParams = Field(default_factory=ClassicalParams)


@functools.lru_cache(maxsize=8)
def _landmarker(model_path: Path, min_confidence: float) -> Any:
    """One landmarker per model file and confidence, shared by every pipeline in the process."""
    from mediapipe.tasks.python import BaseOptions, vision

    options = vision.HandLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(model_path)),
        num_hands=1,
        min_hand_detection_confidence=min_confidence,
        min_hand_presence_confidence=min_confidence,
    )
    landmarker = vision.HandLandmarker.create_from_options(options)
    # Its destructor raises at interpreter exit unless closed while MediaPipe's thread pool is
    # still up; threading's exit hooks run before that pool shuts down (plain atexit runs after).
    register = getattr(threading, "_register_atexit", atexit.register)
    register(landmarker.close)
    return landmarker


def detect(landmarker: Any, gray: np.ndarray, work_size: int) -> crop.Box | None:
    """The box around the first hand's landmarks, in ``gray``'s pixels, or None. A landmarker is not
    thread-safe: the caller holds its lock."""
    import mediapipe as mp

    h, w = gray.shape[:2]
    small, _ = crop.downscale(gray, work_size)
    rgb = np.ascontiguousarray(cv2.cvtColor(small, cv2.COLOR_GRAY2RGB))
    result = landmarker.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb))
    if not result.hand_landmarks:
        return None
    xs = [p.x for p in result.hand_landmarks[0]]
    ys = [p.y for p in result.hand_landmarks[0]]
    x0, x1 = max(0.0, min(xs)) * w, min(1.0, max(xs)) * w
    y0, y1 = max(0.0, min(ys)) * h, min(1.0, max(ys)) * h
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))


def build(params: MediaPipeParams) -> Cropper:
    """Never fails for a missing extra or model file: it logs why and crops with the classical
    cropper, warning on every image (the model may have been trained on MediaPipe crops)."""
    fallback = build_classical(params.fallback)
    path = params.model_path or os.environ.get(MODEL_ENV)
    reason = None
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        reason = "mediapipe is not installed (pip install 'boneage[mediapipe]')"
    if reason is None and not path:
        reason = f"no hand model given (set model_path or {MODEL_ENV})"
    elif reason is None and not Path(str(path)).is_file():
        reason = f"hand model {path} not found"
    if reason is None:
        try:
            landmarker = _landmarker(Path(str(path)), params.min_confidence)
        except Exception as exc:  # a corrupt or foreign .task file
            reason = f"hand model {path} could not be loaded: {exc}"
    if reason is not None:
        log.warning("MediaPipe cropper unavailable, using the classical cropper: %s", reason)
        message = f"MediaPipe cropper unavailable ({reason}); the classical cropper was used"

        def degraded(image: np.ndarray, trace: Trace) -> np.ndarray:
            trace.warn(message)  # the model may have been trained on MediaPipe crops
            return fallback(image, trace)

        return degraded

    lock = _locks.setdefault(id(landmarker), threading.Lock())  # a landmarker is not thread-safe

    def cropper(image: np.ndarray, trace: Trace) -> np.ndarray:
        with lock:
            box = detect(landmarker, image, params.work_size)
        if box is None:
            return fallback(image, trace)
        return crop.apply(image, crop.expand(box, params.margin, image.shape))

    return cropper


@hookimpl
def boneage_register_croppers() -> list[CropperSpec]:
    """Registers ``mediapipe``; MediaPipe itself is imported only when a pipeline builds this cropper."""
    return [CropperSpec(name="mediapipe", build=build, params=MediaPipeParams, doc="MediaPipe hand landmarks; classical fallback")]
