"""Checks on an image file's structure before OpenCV decodes it: what a few hundred bytes can make
a decoder do (a TIFF whose tags all point at one large blob, a progressive JPEG of thousands of
scans, a PNG chunk claiming gigabytes), and the facts the size estimate needs that Pillow's lazy
header does not give (TIFF and PNM sample depths, TIFF photometric interpretation)."""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from boneage.errors import ImageReadError, UnsupportedImageError

MAX_TIFF_TAGS = 512  # a real TIFF has 10-40
MAX_TIFF_TAG_BYTES = 16 * 1024 * 1024  # libtiff reads every tag's data, once per tag
MAX_JPEG_SCANS = 100  # a progressive JPEG has about 10
TIFF_TYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}


@dataclass(frozen=True)
class TiffInfo:
    """What the size estimate and the inversion check need from a TIFF's first directory: samples per pixel, bits
    per sample, and the photometric tag (0 is MinIsWhite, i.e. inverted; None when absent)."""
    samples: int
    bits: int
    photometric: int | None


def check_png_chunks(data: bytes, what: str) -> None:
    """Every chunk must end inside the file: one corrupted length byte (a 5 KB file whose IDAT
    claims 4 GB) makes OpenCV take seconds and gigabytes before it fails."""
    i = 8
    while i + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[i : i + 8])
        end = i + 12 + length
        if end > len(data):
            raise ImageReadError(f"{what} is not a readable image: its {kind!r} chunk runs past the end of the file "
                                 "(truncated or corrupted)")
        if kind == b"IEND":
            return
        i = end


def png_has_transparency(data: bytes) -> bool:
    """A tRNS chunk before the image data: OpenCV then decodes an alpha channel."""
    head = data[: data.find(b"IDAT")] if b"IDAT" in data else data
    return b"tRNS" in head


def check_jpeg_scans(data: bytes, what: str) -> None:
    """A progressive JPEG of thousands of tiny scans takes the decoder minutes (80 s per MB);
    start-of-scan markers cannot occur inside entropy-coded data (0xFF is stuffed), so they are
    counted exactly."""
    scans = data.count(b"\xff\xda")
    if scans > MAX_JPEG_SCANS:
        raise ImageReadError(f"{what} is a JPEG of {scans} scans, more than the {MAX_JPEG_SCANS} a real one has")


def jpeg_is_progressive(data: bytes) -> bool:
    """A progressive frame header (SOF2, 6, 10, 14) anywhere: an EXIF thumbnail's own scan comes
    before the main frame, so the first scan marker is no boundary."""
    return any(marker in data for marker in (b"\xff\xc2", b"\xff\xc6", b"\xff\xca", b"\xff\xce"))


def tiff_info(data: bytes, what: str) -> TiffInfo:
    """The first directory of a classic TIFF: refused if it holds too many tags or too much tag
    data for libtiff to read; its samples per pixel, bits per sample and photometric tag."""
    endian = {b"II": "<", b"MM": ">"}.get(data[:2])
    if endian is None or len(data) < 8:
        raise ImageReadError(f"{what} is not a readable TIFF")
    version, offset = struct.unpack(endian + "HI", data[2:8])
    if version == 43:
        raise UnsupportedImageError(f"{what} is a BigTIFF; radiographs are read from classic TIFF, PNG or JPEG")
    if offset + 2 > len(data):
        raise ImageReadError(f"{what} is not a readable TIFF: its directory lies past the end of the file")
    (count,) = struct.unpack(endian + "H", data[offset : offset + 2])
    if count > MAX_TIFF_TAGS:
        raise ImageReadError(f"{what} is a TIFF of {count} tags, more than the {MAX_TIFF_TAGS} allowed")
    values: dict[int, int] = {}
    tag_bytes = 0
    for k in range(count):
        start = offset + 2 + 12 * k
        entry = data[start : start + 12]
        if len(entry) < 12:
            raise ImageReadError(f"{what} is not a readable TIFF: its directory is cut short")
        tag, kind, n = struct.unpack(endian + "HHI", entry[:8])
        tag_bytes += n * TIFF_TYPE_BYTES.get(kind, 1)
        if tag in (258, 262, 277):  # BitsPerSample, PhotometricInterpretation, SamplesPerPixel
            values[tag] = _first_value(data, endian, kind, n, entry[8:])
    if tag_bytes > MAX_TIFF_TAG_BYTES:
        raise ImageReadError(f"{what} is a TIFF whose tags hold {tag_bytes / 2**20:,.0f} MiB, more than the "
                             f"{MAX_TIFF_TAG_BYTES // 2**20} MiB allowed")
    return TiffInfo(samples=max(1, values.get(277, 1)), bits=max(1, values.get(258, 1)), photometric=values.get(262))


def _first_value(data: bytes, endian: str, kind: int, n: int, field: bytes) -> int:
    size = TIFF_TYPE_BYTES.get(kind, 1)
    fmt = {1: "B", 3: "H", 4: "I"}.get(kind)
    if fmt is None:
        return 0
    raw = field if n * size <= 4 else data[struct.unpack(endian + "I", field)[0] :][:size]
    return int(struct.unpack(endian + fmt, raw[:size])[0]) if len(raw) >= size else 0


PNM_HEADER = re.compile(rb"P([2356])(?:\s+|#[^\n]*\n)+(\d+)(?:\s+|#[^\n]*\n)+(\d+)(?:\s+|#[^\n]*\n)+(\d+)")


def pnm_maxval(data: bytes) -> int | None:
    """The largest sample value a PGM or PPM declares (OpenCV does not rescale to it, viewers do)."""
    match = PNM_HEADER.match(data[:1024])
    return int(match.group(4)) if match else None
