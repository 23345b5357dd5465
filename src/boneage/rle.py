"""DICOM RLE Lossless frames, decoded in C by Pillow's PackBits decoder.

Why not pydicom's decoder: it is pure Python (a 4000x4000 16-bit frame of 2-byte runs took 12 s,
an 8000x8000 one would take over a minute) and grows each segment for as long as its runs say.
A DICOM RLE segment is PackBits (PS3.5 G.3.1), which Pillow decodes in C into an image of a size
fixed in advance: a segment can never decode to more than its image (runs past it are ignored, as
pydicom ignores a segment's padding, but cost nothing: pydicom decoded them all, 1.4 GB for 20 MB).
"""

from __future__ import annotations

import struct

import numpy as np

from boneage.errors import ImageReadError


def segments(frame: bytes, bits_allocated: int, what: str) -> list[memoryview]:
    """The frame's segments, most significant byte first, from its 64-byte header: one per byte
    of a grayscale sample, at offsets in order inside the frame."""
    if len(frame) < 64:
        raise ImageReadError(f"{what}: its RLE frame is shorter than its 64-byte header")
    count, *offsets = struct.unpack("<16I", frame[:64])
    if count != bits_allocated // 8:
        raise ImageReadError(f"{what}: its RLE frame has {count} segments, not the {bits_allocated // 8} "
                             "a grayscale image of its bits needs")
    bounds = [*offsets[:count], len(frame)]
    if not all(64 <= start <= end <= len(frame) for start, end in zip(bounds, bounds[1:], strict=False)):
        raise ImageReadError(f"{what}: its RLE frame's segment offsets are out of order or past its end")
    view = memoryview(frame)  # slices of a view: no copy of a segment
    return [view[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]


def _fills(segment: memoryview, size: int) -> np.ndarray | None:
    """The first ``size`` bytes the segment's runs decode to, or None if they decode to fewer."""
    from PIL import Image

    try:
        image = Image.frombytes("L", (size, 1), segment, "packbits", "L")
    except ValueError:  # "not enough image data": the runs end before the image is full
        return None
    return np.asarray(image).reshape(-1)


def decode(frame: bytes, rows: int, columns: int, bits_allocated: int, what: str) -> np.ndarray:
    """The frame's stored values, rows x columns of unsigned 8 or 16 bits (as pydicom gives them
    before the pixel representation is applied). A segment that decodes to fewer bytes than the
    image is an ``ImageReadError``."""
    need = rows * columns
    out = np.empty((rows, columns), "u1" if bits_allocated == 8 else "<u2")
    planes = out.reshape(-1).view(np.uint8)
    parts = segments(frame, bits_allocated, what)
    for index, segment in enumerate(parts):
        plane = _fills(segment, need)
        if plane is None:
            raise ImageReadError(f"{what}: an RLE segment decodes to fewer than the {need:,} bytes its header describes")
        planes[len(parts) - 1 - index :: len(parts)] = plane  # little-endian memory: the first segment is the high byte
        del plane
    return out
