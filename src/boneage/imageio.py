"""Turn what a caller passes (path, bytes, array) into a checked numpy image.

Sizes are checked before any pixel is decoded (from the header for PNG and JPEG, by OpenCV's
own pixel cap for other formats), so a hostile header cannot exhaust memory.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from boneage.errors import (
    ImageReadError,
    ImageTooLargeError,
    ImageTooSmallError,
    UnsupportedImageError,
)

ImageInput = str | os.PathLike[str] | bytes | bytearray | memoryview | np.ndarray

MIN_SIDE = 32
MAX_PIXELS = 64_000_000  # a large CR plate is ~4300x3500 = 15 MP
MAX_BYTES = 512 * 1024 * 1024
# PNG and JPEG sizes are checked from their headers below; for the other formats OpenCV enforces
# this cap itself before decoding (it reads the variable once, at its first decode).
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))

import cv2  # noqa: E402


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG or JPEG header, None for other formats."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            length = struct.unpack(">H", data[i + 2 : i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                return int(w), int(h)
            i += 2 + length
    return None


def check_size(width: int, height: int, what: str) -> None:
    if width * height > MAX_PIXELS:
        raise ImageTooLargeError(f"{what} is {width}x{height} pixels, more than the {MAX_PIXELS:,} allowed")
    if min(width, height) < MIN_SIDE:
        raise ImageTooSmallError(f"{what} is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")


def decode(data: bytes, what: str = "image") -> np.ndarray:
    if not data:
        raise ImageReadError(f"{what} is empty")
    size = header_size(data)
    if size is not None:
        check_size(*size, what)
    buffer = np.frombuffer(data, np.uint8)
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageReadError(f"{what} could not be decoded: {exc}") from exc
    if image is None:
        raise ImageReadError(f"{what} is not a readable image (truncated, or not PNG/JPEG/TIFF/BMP)")
    if image.ndim == 3 and image.shape[2] >= 3:  # OpenCV decodes to BGR(A)
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    return check_array(image, what)


def read_path(path: Path) -> bytes:
    what = str(path)
    try:
        if not path.exists():
            raise ImageReadError(f"{what}: no such file")
        if path.is_dir():
            raise ImageReadError(f"{what} is a directory, not an image")
        if path.stat().st_size > MAX_BYTES:
            raise ImageTooLargeError(f"{what} is larger than {MAX_BYTES // 2**20} MiB")
        return path.read_bytes()
    except OSError as exc:
        raise ImageReadError(f"{what} cannot be read: {exc.strerror or exc}") from exc


def check_array(image: np.ndarray, what: str = "array") -> np.ndarray:
    """Accept (H, W), (H, W, 1|3|4) of uint8, uint16, or float in [0, 1]."""
    if not isinstance(image, np.ndarray):
        raise UnsupportedImageError(f"{what} is a {type(image).__name__}, not a numpy array")
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


def load_image(source: ImageInput) -> np.ndarray:
    """A checked image array from a path, encoded bytes or an array."""
    if isinstance(source, np.ndarray):
        return check_array(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode(bytes(source), "image bytes")
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        return decode(read_path(path), str(path))
    raise UnsupportedImageError(f"cannot read an image from a {type(source).__name__}")
