"""A decoded, checked image (:class:`Loaded`) and the checks and limits every decoder applies to
one: :mod:`boneage.imageio` for PNG, JPEG and the rest, :mod:`boneage.dicom` for DICOM.

Its own module, below both readers, so the DICOM reader that :mod:`boneage.imageio` dispatches to
does not import :mod:`boneage.imageio` back (they used to import each other).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from boneage.errors import ImageTooLargeError, ImageTooSmallError, UnsupportedImageError
from boneage.patient import HeaderPatient

MIN_SIDE = 32
MAX_PIXELS = 64_000_000  # a large CR plate is ~4300x3500 = 15 MP
# The decoded image's bytes: a 64 MP 16-bit grayscale plate (128 MB) passes, an 8000x8000 16-bit
# RGBA PNG (512 MB, about 1.5 GB while converted) does not.
MAX_DECODED_BYTES = 160 * 1024 * 1024


@dataclass(frozen=True)
class Loaded:
    """A checked image, and what was done to it on the way (e.g. an EXIF rotation); ``patient``:
    the sex and age its header holds (a DICOM's), for the caller to use where none was given."""

    image: np.ndarray
    notes: tuple[str, ...] = ()
    patient: HeaderPatient | None = None


def check_size(width: int, height: int, what: str) -> None:
    """Raises :class:`ImageTooLargeError` above ``MAX_PIXELS`` and :class:`ImageTooSmallError` when a
    side is under ``MIN_SIDE``; ``what`` names the input in the message. Shared with the DICOM reader."""
    if width * height > MAX_PIXELS:
        raise ImageTooLargeError(f"{what} is {width}x{height} pixels, more than the {MAX_PIXELS:,} allowed")
    if min(width, height) < MIN_SIDE:
        raise ImageTooSmallError(f"{what} is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")


def check_array(image: np.ndarray, what: str = "array") -> np.ndarray:
    """Accept (H, W), (H, W, 1|3|4) of uint8, uint16, or float in [0, 1]."""
    if not isinstance(image, np.ndarray):
        raise UnsupportedImageError(f"{what} is a {type(image).__name__}, not a numpy array")
    if isinstance(image, np.ma.MaskedArray):  # its data was read as it is, the mask ignored
        raise UnsupportedImageError(f"{what} is a masked array, whose masked pixels would be read as the values "
                                    "under the mask: fill it first (e.g. image.filled(0))")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise UnsupportedImageError(
            f"{what} has shape {image.shape}; expected (H, W) or (H, W, C) with C in 1, 3, 4"
        )
    if image.dtype.kind == "f":
        if not np.all(np.isfinite(image)):
            raise UnsupportedImageError(f"{what} holds NaN or infinite values")
        if image.size and (image.min() < 0 or image.max() > 1):
            raise UnsupportedImageError(f"{what} is float but not in [0, 1] (min {image.min():g}, max {image.max():g})")
        image = image.astype(np.float32, copy=False)
    elif image.dtype not in (np.uint8, np.uint16):
        raise UnsupportedImageError(f"{what} has dtype {image.dtype}; expected uint8, uint16 or float in [0, 1]")
    check_size(image.shape[1], image.shape[0], what)
    return image
