"""JPEG structure, read before a decoder sees the file: scans, EXIF segments, the frame and what
its scans send. libjpeg decodes a JPEG cut short, or one whose header declares more than its data
holds, and fills the rest silently; a few hundred bytes of scans or EXIF segments can cost it
minutes. Here a JPEG is refused for those before it is decoded (``imageio``), or before pydicom's
plugins decode a DICOM's frame (``dicom``)."""

from __future__ import annotations

import io
import re
import struct
from dataclasses import dataclass

import numpy as np

from boneage.errors import ImageReadError
from boneage.formats import quiet_warnings

MAX_JPEG_SCANS = 100  # a progressive JPEG has about 10


def check_jpeg_scans(data: bytes, what: str) -> None:
    """A progressive JPEG of thousands of tiny scans takes the decoder minutes (80 s per MB);
    start-of-scan markers cannot occur inside entropy-coded data (0xFF is stuffed), so they are
    counted exactly."""
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise ImageReadError(f"{what} is a JPEG of {scans} scans, more than the {MAX_JPEG_SCANS} a real one has")


MAX_EXIF_SEGMENTS = 64  # a JPEG has one EXIF segment, an MPO one per picture
MAX_JPEG_MARKERS = 10_000  # markers and fill bytes before the frame header: a real JPEG has tens


def check_jpeg_exif_segments(data: bytes, what: str) -> None:
    """Pillow appends each EXIF segment of a JPEG to the ones before, copying all of them each time:
    300 segments of 64 KB (a 19 MB file) took 4 s to open, a 512 MB file of them would take hours.
    The segment's identifier is counted anywhere, as the scan markers are."""
    segments = data.count(b"Exif\x00\x00")
    if segments > MAX_EXIF_SEGMENTS:
        raise ImageReadError(f"{what} is a JPEG of {segments:,} EXIF segments, more than the {MAX_EXIF_SEGMENTS} allowed")


def jpeg_exif(data: bytes) -> bytes | None:
    """The first EXIF segment's payload (``Exif\0\0`` and the TIFF structure after it), from the
    markers before the first scan; None without one."""
    return jpeg_segment(data, 0xE1, b"Exif\x00\x00")


def jpeg_segment(data: bytes, kind: int, identifier: bytes) -> bytes | None:
    """The payload of the first segment of marker ``kind`` that starts with ``identifier`` (kept in the payload),
    from the markers before the first scan; None without one."""
    i, markers = 2, 0
    while i + 4 <= len(data) and data[i] == 0xFF and markers <= MAX_JPEG_MARKERS:
        marker, markers = data[i + 1], markers + 1
        if marker in (0xD8, 0x01, 0xFF) or 0xD0 <= marker <= 0xD7:
            i += 1 if marker == 0xFF else 2
            continue
        if marker in (0xDA, 0xD9):
            return None
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker == kind and data[i + 4 : i + 4 + len(identifier)] == identifier:
            return data[i + 4 : i + 2 + length]
        i += 2 + length
    return None


def jpeg_is_progressive(data: bytes) -> bool:
    """A progressive frame header (SOF2, 6, 10, 14) anywhere: an EXIF thumbnail's own scan comes
    before the main frame, so the first scan marker is no boundary."""
    return any(marker in data for marker in (b"\xff\xc2", b"\xff\xc6", b"\xff\xca", b"\xff\xce"))


JPEG_MARKER_IN_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7]")  # not a stuffed 0xFF, not a restart marker
JPEG_PROGRESSIVE_FRAMES = (0xC2, 0xC6, 0xCA, 0xCE)
JPEG_ARITHMETIC_FRAMES = (0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF)


@dataclass(frozen=True)
class JpegLayout:
    """Where a JPEG's (its first image's) scans lie: for each, the offsets of its entropy-coded data,
    from after its header to the marker that ends it, and how many components it holds."""

    frame: int  # the start-of-frame marker: 0xC0 baseline, 0xC2 progressive, ...
    components: int
    scans: tuple[tuple[int, int, int], ...]  # (start, end, components)
    complete: bool = True  # the scans send every coefficient of every component to its last bit
    last_band: tuple[int, int] = (0, 63)  # the coefficients (zigzag Ss to Se) the last scan sends

    @property
    def one_pass(self) -> bool:
        """One sequential scan of every component: libjpeg decodes it as it reads it, with no
        whole-image buffer, so it needs no end-of-image marker to finish."""
        return (self.frame not in JPEG_PROGRESSIVE_FRAMES and len(self.scans) == 1
                and self.scans[0][2] == self.components)

    @property
    def arithmetic(self) -> bool:
        return self.frame in JPEG_ARITHMETIC_FRAMES


def jpeg_layout(data: bytes) -> JpegLayout | None:
    """The frame and scans of a JPEG's first image, up to its end-of-image marker, walked as the
    other JPEG walks here are (bounded by MAX_JPEG_MARKERS and MAX_JPEG_SCANS); the end of a scan's
    data is found by a regular-expression search, in C. None without a frame or a scan.

    Whether the scans complete the image is read from their headers: a sequential scan sends its
    components whole, a progressive one a band of coefficients (Ss to Se) down to bit Al, so every
    component of the frame must be in a scan, and in a progressive frame every coefficient of it
    must reach bit 0. A file cut after a scan and given its end marker back (a progressive JPEG's
    later scans, a non-interleaved JPEG's later components) lacks some: libjpeg decodes it silently."""
    i, markers, frame, components = 2, 0, 0, 0
    scans: list[tuple[int, int, int]] = []
    ids: tuple[int, ...] = ()
    band = (0, 63)
    lowest: dict[int, list[int]] = {}  # component id -> for each coefficient, the lowest bit sent (64: none)
    while i + 4 <= len(data) and markers <= MAX_JPEG_MARKERS and len(scans) <= MAX_JPEG_SCANS:
        if data[i] != 0xFF:  # bytes between segments: libjpeg skips them to the next marker, with a warning
            i, markers = data.find(b"\xff", i), markers + 1
            if i < 0:
                break
            continue
        marker, markers = data[i + 1], markers + 1
        if marker in (0xD8, 0x01, 0xFF) or 0xD0 <= marker <= 0xD7:
            i += 1 if marker == 0xFF else 2
            continue
        if marker == 0xD9:
            break
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and not frame and i + 10 <= len(data):
            frame, components = marker, data[i + 9]
            ids = tuple(data[i + 10 : i + 10 + 3 * components : 3])
            lowest = {c: [64] * 64 for c in ids}
        if marker == 0xDA:
            start, in_scan = i + 2 + length, data[i + 4] if i + 4 < len(data) else 0
            band = _sent(data[i + 4 : i + 2 + length], frame, lowest)
            found = JPEG_MARKER_IN_SCAN.search(data, start)
            i = found.start() if found else len(data)
            scans.append((start, i, in_scan))
            continue
        i += 2 + length
    complete = len(ids) == components and all(max(bits) == 0 for bits in lowest.values())
    return JpegLayout(frame, components, tuple(scans), complete, band) if frame and scans else None


def _sent(header: bytes, frame: int, lowest: dict[int, list[int]]) -> tuple[int, int]:
    """What one scan header says it sends, recorded in ``lowest``: its components, and in a
    progressive frame the coefficients Ss to Se down to bit Al (a sequential scan sends them all).
    Returns the band (Ss, Se)."""
    count = header[0] if header else 0
    if len(header) < 1 + 2 * count + 3:
        return 0, 63  # a malformed scan header: its components stay unsent, so the file is refused as incomplete
    band_start, band_end, approximation = header[1 + 2 * count : 4 + 2 * count]
    first, last, bit = (band_start, min(band_end, 63), approximation & 0x0F) if frame in JPEG_PROGRESSIVE_FRAMES else (0, 63, 0)
    for component in header[1 : 1 + 2 * count : 2]:
        bits = lowest.get(component)
        if bits is not None:
            bits[first : last + 1] = [min(b, bit) for b in bits[first : last + 1]]
    return first, last


# What a one-pass JPEG's scan ends in, in place of its end marker: zero bits, as libjpeg reads after a
# marker, enough for its 57-bit look-ahead (64-bit builds) once the last block is decoded.
JPEG_SCAN_PADDING = bytes(8)
# Bytes put after the last scan of a multi-scan JPEG, where a scan short of its frame reads them as
# coefficients: no 0xFF (a marker), and no run of one code a table could read as "no change".
JPEG_PROBE = bytes((37 * k + 11) % 255 for k in range(64))


def jpeg_to_decode(data: bytes, width: int, height: int, what: str) -> bytes:
    """A JPEG whose compressed data ends before the frame its header declares is filled (one byte of
    the frame header changed, 300x400 pixels declared as 600x800; a file cut short and given its end
    marker back) is refused: libjpeg fills the rest with zeros, warns on stderr only, and OpenCV
    returns the image (a radiograph read as 39.9 months instead of 203.3). Returns what to decode.

    Scans missing altogether (a file cut after a scan) are seen in the scan headers (``jpeg_layout``).
    A JPEG of one sequential scan (what cameras, scanners, OpenCV and Pillow write) is decoded
    without the marker that ends its scan, followed by zero bits: a scan that fills its frame
    decodes as before (the zeros are only read ahead), one that does not runs dry and OpenCV
    fails, at no extra cost. A JPEG of several scans (progressive) needs its end marker to be
    decoded at all, so it is decoded twice more, by Pillow (which keeps libjpeg's warnings quiet),
    at the smallest scale that shows the coefficients its last scan sends, once as it is and once
    with the probe bytes after its last scan: a last scan that fills its frame skips them, one short
    of its frame (cut inside it, or short as every scan is under a frame header that declares too
    much) reads them, and the two differ. Arithmetic-coded JPEGs (rare) are decoded as they are."""
    layout = jpeg_layout(data)
    if layout is None:
        return data  # no scan found: the decoder says what is wrong
    if not layout.complete:  # cut after a scan, its end marker given back: later scans missing
        raise ImageReadError(f"{what} is not a readable image: its scans end before they complete the "
                             f"{width}x{height} image its header declares (a file cut short, or written with "
                             "a partial scan script)")
    if layout.one_pass:
        return data[: layout.scans[0][1]] + JPEG_SCAN_PADDING
    if not layout.arithmetic:
        end, scale = layout.scans[-1][1], probe_scale(*layout.last_band)
        plain = _scaled_image(data, scale)
        probed = _scaled_image(data[:end] + JPEG_PROBE + data[end:], scale) if plain is not None else None
        if plain is not None and (probed is None or not np.array_equal(plain, probed)):
            raise jpeg_short_of_frame(width, height, what)
    return data


def jpeg_short_of_frame(width: int, height: int, what: str) -> ImageReadError:
    return ImageReadError(f"{what} is not a readable image: its compressed data ends before the {width}x{height} "
                          "frame its header declares is filled (a corrupted header, or a file cut short)")


# The 8x8 block's coefficients in the order a scan sends them (zigzag), as (row, column).
ZIGZAG = tuple(divmod(n, 8) for n in (
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47,
    55, 62, 63))


def probe_scale(first: int, last: int) -> int:
    """The smallest decode (1/8, 1/4, 1/2 or full scale) whose transform uses a coefficient of the
    band ``first`` to ``last``: libjpeg's 1/8 scale keeps the DC alone, 1/4 the top-left 2x2, 1/2 4x4."""
    for scale in (8, 4, 2):
        if any(row < 8 // scale and col < 8 // scale for row, col in ZIGZAG[first : last + 1]):
            return scale
    return 1


def _scaled_image(data: bytes, scale: int) -> np.ndarray | None:
    """A JPEG decoded at 1/``scale`` by libjpeg's scaled transform, or None if Pillow cannot."""
    from PIL import Image

    try:
        with quiet_warnings():  # the header's parsing warns; the decode, the long part, raises: outside the lock
            im = Image.open(io.BytesIO(data), formats=["JPEG"])
            if scale > 1:
                im.draft(im.mode, (max(1, im.width // scale), max(1, im.height // scale)))
        with im:
            return np.asarray(im)
    except Exception:  # noqa: BLE001 - the full decode that follows says what is wrong
        return None


def check_jpeg_frame(data: bytes, width: int, height: int, what: str) -> None:
    """The checks of ``jpeg_to_decode`` for a JPEG that another decoder reads (a DICOM's frame, by
    pydicom's plugins): a one-scan JPEG is decoded by OpenCV at 1/8 scale (its scan is still read
    whole) without its end marker. A frame OpenCV cannot decode at all (12-bit, lossless) is left
    to its decoder."""
    prepared = jpeg_to_decode(data, width, height, what)
    if prepared is not data and _imdecode(prepared, REDUCED_8) is None and _imdecode(data, REDUCED_8) is not None:
        raise jpeg_short_of_frame(width, height, what)


REDUCED_8 = 64  # cv2.IMREAD_REDUCED_GRAYSCALE_8: libjpeg's 1/8-scale transform


def _imdecode(data: bytes, flags: int) -> np.ndarray | None:
    import cv2  # imported by boneage.imageio first, which sets its pixel limit

    try:
        return cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        return None
