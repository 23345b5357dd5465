"""A decoded, checked image (:class:`Loaded`) and the checks and limits every decoder applies to
one: :mod:`boneage.imageio` for PNG, JPEG and the rest, :mod:`boneage.dicom` for DICOM.

Its own module, below both readers, so the DICOM reader that :mod:`boneage.imageio` dispatches to
does not import :mod:`boneage.imageio` back (they used to import each other).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from boneage.errors import ImageTooLargeError, ImageTooSmallError, UnsupportedImageError
from boneage.patient import HeaderPatient

MIN_SIDE = 32
MAX_PIXELS = 64_000_000  # a large CR plate is ~4300x3500 = 15 MP
# The decoded image's bytes: a 64 MP 16-bit grayscale plate (128 MB) passes, an 8000x8000 16-bit
# RGBA PNG (512 MB, about 1.5 GB while converted) does not.
MAX_DECODED_BYTES = 160 * 1024 * 1024
# An array passed in (or a decoder's result) once read, float as float32: a caller's own array may be larger
# than a file's decoded pixels (a 15 MP RGB plate in float32 is 180 MiB), as a preprocessing step's output may.
MAX_ARRAY_BYTES = 4 * MAX_DECODED_BYTES


@dataclass(frozen=True)
class Loaded:
    """A checked image, and what was done to it on the way (e.g. an EXIF rotation); ``patient``:
    the sex and age its header holds (a DICOM's), for the caller to use where none was given."""

    image: np.ndarray
    notes: tuple[str, ...] = ()
    patient: HeaderPatient | None = None
    warnings: tuple[str, ...] = ()  # doubts the reading raised (e.g. a BMP whose data ends early)


def check_size(width: int, height: int, what: str) -> None:
    """Raises :class:`ImageTooLargeError` above ``MAX_PIXELS`` and :class:`ImageTooSmallError` when a
    side is under ``MIN_SIDE``; ``what`` names the input in the message. Shared with the DICOM reader."""
    if width * height > MAX_PIXELS:
        raise ImageTooLargeError(f"{what} is {width}x{height} pixels, more than the {MAX_PIXELS:,} allowed")
    if min(width, height) < MIN_SIDE:
        raise ImageTooSmallError(f"{what} is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")


def check_array(image: np.ndarray, what: str = "array") -> np.ndarray:
    """Accept (H, W), (H, W, 1|3|4) of uint8, uint16, or float in [0, 1]. Its size is checked from its shape
    before any pixel is converted or scanned: a broadcast view of 4 bytes may claim 50000x50000 pixels, and a
    big-endian copy or a scan for NaN took 2.6 GB and 14 s before it was refused."""
    if not isinstance(image, np.ndarray):
        raise UnsupportedImageError(f"{what} is a {type(image).__name__}, not a numpy array")
    if isinstance(image, np.ma.MaskedArray):  # its data was read as it is, the mask ignored
        raise UnsupportedImageError(f"{what} is a masked array, whose masked pixels would be read as the values "
                                    "under the mask: fill it first (e.g. image.filled(0))")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise UnsupportedImageError(
            f"{what} has shape {image.shape}; expected (H, W) or (H, W, C) with C in 1, 3, 4"
        )
    # big-endian (FITS, np.frombuffer(..., ">u2")) is read as its native twin
    dtype = image.dtype.newbyteorder("=") if image.dtype.kind in "uf" else image.dtype
    if dtype.kind != "f" and dtype not in (np.uint8, np.uint16):
        raise UnsupportedImageError(f"{what} has dtype {dtype}; expected uint8, uint16 or float in [0, 1]")
    check_array_size(image.shape, 4 if dtype.kind == "f" else dtype.itemsize, what)
    if dtype.kind == "f":  # scanned as it is (NaN is both its min and max), then one float32 copy at most
        low, high = image.min(), image.max()
        if not (np.isfinite(low) and np.isfinite(high)):
            raise UnsupportedImageError(f"{what} holds NaN or infinite values")
        if low < 0 or high > 1:
            raise UnsupportedImageError(f"{what} is float but not in [0, 1] (min {low:g}, max {high:g})")
        return image.astype(np.float32, copy=False)
    return image if dtype == image.dtype else image.astype(dtype)


def check_array_size(shape: tuple[int, ...], sample_bytes: int, what: str) -> None:
    """:func:`check_size`, and the bytes the array takes once read (float as float32), at most
    ``MAX_ARRAY_BYTES``: from the shape alone, before any pixel is touched."""
    height, width = shape[:2]
    check_size(width, height, what)
    channels = shape[2] if len(shape) == 3 else 1
    if width * height * channels * sample_bytes > MAX_ARRAY_BYTES:
        raise ImageTooLargeError(f"{what} is {width}x{height} pixels of {channels} channel(s) of {8 * sample_bytes} "
                                 f"bits: more than the {MAX_ARRAY_BYTES // 2**20} MiB an image array may take")


# 16-bit images: which of their bits hold the picture. A 16-bit PNG or TIFF may hold 8-bit values
# scaled by 257 (a plain 16-bit image), 8-bit values as they are, or the 10, 12 or 14 bits of a
# detector; the grayscale step reads 16 bits (value / 257), so the others are scaled to the 16-bit
# range first (`full_range`). DICOM is not read this way: its display mapping already gives 16-bit
# grey levels (:mod:`boneage.dicom`).
DEPTHS = (8, 10, 12, 14, 16)
# The share of pixels that may lie above a depth's top and still be read at that depth, shown white: a
# burned-in marker or a hot pixel written at 65535 into a 12-bit image. Saturated markers cover at
# most 0.11% of the 12 full-size RSNA radiographs; a 16-bit radiograph whose pixels lie 99.5% in the
# lowest quarter of its range would show as nearly black anyway.
OUTLIER_SHARE = 0.005


def value_counts(image: np.ndarray) -> np.ndarray:
    """How many samples of a uint16 image (its colour channels, not alpha) hold each of the 65,536 values;
    one pass in C, no copy of a contiguous image."""
    if image.ndim == 3:
        image = np.ascontiguousarray(image[..., : min(3, image.shape[2])]).reshape(image.shape[0], -1)
    return np.asarray(cv2.calcHist([image], [0], None, [65536], [0, 65536])).ravel()


def bit_depth(counts: np.ndarray) -> tuple[int, int]:
    """The bits a 16-bit image's values use, from :func:`value_counts`, and how many samples lie above
    them: 16 for 8-bit values scaled by 257 (all, or all but OUTLIER_SHARE, multiples of 257), else
    the smallest of DEPTHS that holds all but OUTLIER_SHARE of the samples."""
    total = float(counts.sum())
    if not total:
        return 16, 0
    allowed = OUTLIER_SHARE * total
    multiples = float(counts[::257].sum())
    if total - multiples <= allowed and counts[257:].any():  # 8-bit values x 257 (0 and 255*257 included)
        return 16, 0
    above = total - np.cumsum(counts, dtype=np.float64)  # above[v]: samples greater than v
    for bits in DEPTHS:
        over = above[(1 << bits) - 1]
        if over <= allowed:
            return bits, round(over)
    return 16, 0  # not reached: nothing lies above 65535


def full_range(image: np.ndarray, declared_max: int | None = None, what: str = "the image") -> tuple[np.ndarray, tuple[str, ...]]:
    """A uint16 image scaled so that its own range fills 0-65535, and a note saying so; other images, and
    16-bit ones that use their 16 bits, as they are. ``declared_max``: the largest value the file says its
    samples take (a PGM's maxval, a PNG's sBIT), used instead of guessing from the values."""
    if image.dtype != np.uint16:
        return image, ()
    if declared_max is not None:
        top, over, bits = declared_max, 0, None
        if top >= 65535:
            return image, ()
    else:
        counts = value_counts(image)
        bits, over = bit_depth(counts)
        if bits == 16:
            return image, ()
        top = (1 << bits) - 1
    scale = 65535.0 / top
    colour = image[..., :3] if image.ndim == 3 and image.shape[2] == 4 else image
    flat = np.ascontiguousarray(colour).reshape(image.shape[0], -1)
    # rounded and saturated (the samples above the top become 65535), in one pass with no float copy;
    # addWeighted, as cv2.multiply by a scalar took ten times as long (0.7 s for 36 MP)
    scaled = np.asarray(cv2.addWeighted(flat, scale, flat, 0.0, 0.0, dtype=cv2.CV_16U)).reshape(colour.shape)
    if colour is not image:
        scaled = np.concatenate([scaled, image[..., 3:]], axis=2)
    if bits is None:
        note = f"read as values 0-{top} (as the file declares) scaled to the 16-bit range"
    else:
        range_note = f"its values lie within 0-{top}" if not over else (
            f"all but {over:,} of its samples ({100 * over / counts.sum():.2g}%) lie within 0-{top}; those are shown white")
        note = f"read as {'an' if bits == 8 else 'a'} {bits}-bit image in a 16-bit container: {range_note}"
    return scaled, (note,)
