"""Checks on an image file's structure before OpenCV decodes it: what a few hundred bytes can make
a decoder do (a TIFF whose tags all point at one large blob, a PNG chunk claiming gigabytes; JPEG's
own are in :mod:`boneage.jpeg`), and the facts the size estimate needs that Pillow's lazy header
does not give (TIFF and PNM sample depths, TIFF photometric interpretation)."""

from __future__ import annotations

import re
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from boneage.errors import ImageReadError, UnsupportedImageError

MAX_TIFF_TAGS = 512  # a real TIFF has 10-40
MAX_TIFF_TAG_BYTES = 16 * 1024 * 1024  # libtiff reads every tag's data, once per tag
TIFF_TYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}


@dataclass(frozen=True)
class TiffInfo:
    """What the size estimate and the inversion check need from a TIFF's first directory: samples per pixel, bits
    per sample, and the photometric tag (0 is MinIsWhite, i.e. inverted; None when absent)."""
    samples: int
    bits: int
    photometric: int | None
    tile: tuple[int, int] | None = None  # TileWidth and TileLength of a tiled TIFF
    extra_samples: int | None = None  # ExtraSamples' first value: 1 is associated (premultiplied) alpha


MAX_PNG_CHUNKS = 200_000  # a 512 MB file in libpng's 8 KB IDAT chunks has 64,000
MAX_PNG_OTHER_CHUNKS = 1_000  # chunks that are not IDAT: libpng keeps no more (its chunk cache)
MAX_PNG_COMPRESSED_TEXTS = 16  # zTXt and compressed iTXt: a real PNG has a few


def compressed_text(kind: bytes, body: bytes) -> bool:
    """A zTXt chunk, or an iTXt whose compression flag (after its keyword) is set: libpng inflates
    each before the image, up to its 8 MB limit: 35 ms for a chunk of 8 KB that inflates that far."""
    if kind == b"zTXt":
        return True
    nul = body.find(b"\0", 0, 80)
    return kind == b"iTXt" and nul >= 0 and body[nul + 1 : nul + 2] == b"\x01"


def check_png_chunks(data: bytes, what: str) -> bool:
    """Every chunk must end inside the file: one corrupted length byte (a 5 KB file whose IDAT
    claims 4 GB) makes OpenCV take seconds and gigabytes before it fails. And the chunks are
    counted: 2 million empty text chunks (26 MB) took 10 s to decode, 40 s with an EXIF chunk
    (Pillow reads them one by one); a 512 MB file of them would take minutes. Compressed text chunks
    are counted on their own: 990 zTXt of 8 KB, each inflating to 8 MB (a 7.8 MB file), took 34 s.
    Whether the walk reached an IEND chunk."""
    i, chunks, others, texts = 8, 0, 0, 0
    while i + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[i : i + 8])
        end = i + 12 + length
        if end > len(data):
            raise ImageReadError(f"{what} is not a readable image: its {kind!r} chunk runs past the end of the file "
                                 "(truncated or corrupted)")
        chunks, others = chunks + 1, others + (kind != b"IDAT")
        if chunks > MAX_PNG_CHUNKS or others > MAX_PNG_OTHER_CHUNKS:
            raise ImageReadError(f"{what} is a PNG of more than {MAX_PNG_CHUNKS:,} chunks, or more than "
                                 f"{MAX_PNG_OTHER_CHUNKS:,} that are not image data")
        texts += kind in (b"zTXt", b"iTXt") and compressed_text(kind, data[i + 8 : i + 8 + min(length, 81)])
        if texts > MAX_PNG_COMPRESSED_TEXTS:
            raise ImageReadError(f"{what} is a PNG of more than {MAX_PNG_COMPRESSED_TEXTS} compressed text chunks")
        if kind == b"IEND":
            return True
        i = end
    return False


_warnings_lock = threading.RLock()


@contextmanager
def quiet_warnings() -> Iterator[None]:
    """Python warnings ignored while Pillow parses a header or EXIF ("Corrupt EXIF data", "Tag data larger
    than file"): the checks here decide what a damaged file is, and under ``-W error`` (or pytest's
    ``filterwarnings = error``) the warning became an exception that dropped a valid orientation.
    ``warnings.catch_warnings`` swaps the process's filters and puts them back: two threads interleaving
    could leave "ignore" in place for good, so boneage's own uses take turns (each a few milliseconds)."""
    with _warnings_lock, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# PNG chunks OpenCV's decoder needs: the critical ones (an upper-case first letter), transparency, and
# APNG's frames (refused, or read, as png_frames decides). libpng checks the others only to print a
# warning on the caller's stderr ("libpng warning: eXIf: invalid", "sBIT: out of place"): the decoded
# pixels are the same without them (gAMA, cHRM, sRGB, iCCP, sBIT, bKGD and pHYs measured).
DECODER_CHUNKS = (b"tRNS", b"acTL", b"fcTL", b"fdAT")


def png_for_decoder(data: bytes) -> bytes:
    """The PNG without the ancillary chunks OpenCV's decoder has no use for (``DECODER_CHUNKS`` kept), so
    libpng has no damaged one to warn about on stderr; ``data`` itself when it holds none (no copy).
    The chunks were checked first (:func:`check_png_chunks`)."""
    i, parts, start, dropped = 8, [], 8, False
    while i + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[i : i + 8])
        end = i + 12 + length
        if kind[:1].islower() and kind not in DECODER_CHUNKS:
            parts.append(data[start:i])
            start, dropped = end, True
        if kind == b"IEND" or end > len(data):
            break
        i = end
    if not dropped:
        return data
    parts.append(data[start:])
    return data[:8] + b"".join(parts)


def png_has_transparency(data: bytes) -> bool:
    """A tRNS chunk before the image data: OpenCV then decodes an alpha channel."""
    head = data[: data.find(b"IDAT")] if b"IDAT" in data else data
    return b"tRNS" in head


MAX_PNM_HEADER = 64 * 1024  # comments included; Pillow reads a PNM header one byte at a time


def check_pnm_header(data: bytes, what: str) -> None:
    """A PGM/PPM/PBM/PFM header must end within MAX_PNM_HEADER bytes: Pillow reads its comments and
    blanks a byte at a time in Python (a 5 MB comment took 14 s; a 512 MB one would take half an hour)."""
    needed = 2 if data[1:2] in (b"1", b"4") else 3  # width, height, and maxval or scale
    tokens, i, end = 0, 2, min(len(data), MAX_PNM_HEADER)
    while tokens < needed:
        while i < end and data[i : i + 1].isspace():
            i += 1
        if i < end and data[i] == 0x23:  # a comment runs to the end of its line
            newline = data.find(b"\n", i, end)
            i = end if newline < 0 else newline + 1
            continue
        if i >= end:
            break
        while i < end and not data[i : i + 1].isspace() and data[i] != 0x23:
            i += 1
        tokens += 1
    if tokens < needed and len(data) > MAX_PNM_HEADER:
        raise ImageReadError(f"{what}: its PNM header runs past {MAX_PNM_HEADER // 1024} KB (comments included)")


def tiff_info(data: bytes, what: str) -> TiffInfo:
    """The first directory of a classic TIFF: refused if it holds too many tags or too much tag
    data for libtiff to read; its samples per pixel, bits per sample, photometric tag and kind of alpha."""
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
        # BitsPerSample, Photometric, SamplesPerPixel, TileWidth, TileLength, ExtraSamples
        if tag in (258, 262, 277, 322, 323, 338):
            values[tag] = _first_value(data, endian, kind, n, entry[8:])
    if tag_bytes > MAX_TIFF_TAG_BYTES:
        raise ImageReadError(f"{what} is a TIFF whose tags hold {tag_bytes / 2**20:,.0f} MiB, more than the "
                             f"{MAX_TIFF_TAG_BYTES // 2**20} MiB allowed")
    tile = (values[322], values[323]) if 322 in values and 323 in values else None
    return TiffInfo(samples=max(1, values.get(277, 1)), bits=max(1, values.get(258, 1)), photometric=values.get(262),
                    tile=tile, extra_samples=values.get(338))


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


def png_chunks_before_image(data: bytes, kinds: tuple[bytes, ...]) -> dict[bytes, bytes]:
    """The body of the first chunk of each of ``kinds`` that comes before the image data (IDAT), for
    the facts libpng and OpenCV do not pass on: sBIT (the significant bits), acTL (an animated PNG).
    The chunks were counted and bounded by :func:`check_png_chunks` first."""
    found: dict[bytes, bytes] = {}
    i = 8
    while i + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[i : i + 8])
        if kind in (b"IDAT", b"IEND"):
            break
        if kind in kinds and kind not in found:
            found[kind] = data[i + 8 : i + 8 + min(length, 64)]
        i += 12 + length
    return found


def png_significant_bits(data: bytes) -> int | None:
    """A 16-bit PNG's sBIT: the most significant bits of its colour channels (alpha aside); None without one."""
    if len(data) < 26 or data[24] != 16:
        return None
    body = png_chunks_before_image(data, (b"sBIT",)).get(b"sBIT", b"")
    colours = {0: 1, 2: 3, 4: 1, 6: 3}.get(data[25], 0)
    bits = [b for b in body[:colours] if 1 <= b <= 16]
    return max(bits) if len(bits) == colours and colours else None


def png_frames(data: bytes) -> int:
    """The frames an animated PNG (APNG) declares in its acTL chunk; 1 for a still PNG."""
    body = png_chunks_before_image(data, (b"acTL",)).get(b"acTL", b"")
    return max(1, struct.unpack(">I", body[:4])[0]) if len(body) >= 4 else 1


MAX_WEBP_CHUNKS = 1_000  # a still WebP holds 1-5 chunks, an animation one ANMF chunk per frame


def webp_frames(data: bytes) -> int:
    """The frames of an animated WebP (its ANMF chunks, counted up to 2, as only "more than one" matters);
    1 for a still one (no animation flag in VP8X)."""
    if data[12:16] != b"VP8X" or len(data) < 21 or not data[20] & 0x02:  # VP8X flags: bit 1 is "animation"
        return 1
    frames, i = 0, 12
    for _ in range(MAX_WEBP_CHUNKS):
        if i + 8 > len(data) or frames >= 2:
            break
        kind, size = data[i : i + 4], struct.unpack("<I", data[i + 4 : i + 8])[0]
        frames += kind == b"ANMF"
        i += 8 + size + (size & 1)
    return max(frames, 1)


MAX_TIFF_PAGES = 64  # pages walked: a scanner's TIFF holds the image and perhaps a preview or two
REDUCED = 0x1 | 0x4  # NewSubfileType: a reduced-resolution copy, or a transparency mask


def tiff_pages(data: bytes) -> list[bool]:
    """For each page (directory) of a classic TIFF, in order, whether it is an image of its own (False for one
    its NewSubfileType marks as a reduced-resolution copy or a transparency mask). The walk stops at a second
    image of its own, at MAX_TIFF_PAGES, at a directory seen before (a loop), and at one that lies outside the file."""
    endian = {b"II": "<", b"MM": ">"}.get(data[:2])
    if endian is None or len(data) < 8:
        return []
    offset = struct.unpack(endian + "I", data[4:8])[0]
    pages: list[bool] = []
    seen: set[int] = set()
    while offset and offset not in seen and offset + 2 <= len(data) and len(pages) < MAX_TIFF_PAGES:
        seen.add(offset)
        (count,) = struct.unpack(endian + "H", data[offset : offset + 2])
        end = offset + 2 + 12 * count
        if count > MAX_TIFF_TAGS or end + 4 > len(data):  # a damaged later directory: libtiff reads page 1 alone
            break
        subfile = 0
        for start in range(offset + 2, end, 12):
            tag, kind, n = struct.unpack(endian + "HHI", data[start : start + 8])
            if tag == 254:
                subfile = _first_value(data, endian, kind, n, data[start + 8 : start + 12])
                break
        pages.append(not subfile & REDUCED)
        if sum(pages) > 1:
            break
        offset = struct.unpack(endian + "I", data[end : end + 4])[0]
    return pages


MAX_RLE_PAIRS = 4_000_000  # about a second of Python: an RLE BMP is walked no further (no warning then)


def bmp_rle_rows(data: bytes) -> tuple[int, int] | None:
    """For a BMP compressed with RLE8 or RLE4: the rows its data fills before it ends (its end-of-bitmap
    marker, or the file's end) and the rows the header declares; None for any other BMP, or when the
    walk would pass MAX_RLE_PAIRS. The rows not filled are shown in the palette's first colour (black):
    the format allows ending early, but a radiograph cut in half reads as a half-black one."""
    if data[:2] != b"BM" or len(data) < 34:
        return None
    start, = struct.unpack("<I", data[10:14])
    height, bpp, compression = struct.unpack("<iHI", data[22:26] + data[28:34])
    if compression not in (1, 2) or height <= 0:  # RLE8, RLE4; RLE is stored bottom-up only
        return None
    rle4 = compression == 2
    i, row, column, end = start, 0, 0, len(data)
    for _ in range(MAX_RLE_PAIRS):
        if i + 2 > end or row >= height:
            break
        count, value = data[i], data[i + 1]
        i += 2
        if count:  # a run of one value
            column += count
        elif value == 0:  # end of line
            row, column = row + 1, 0
        elif value == 1:  # end of bitmap
            break
        elif value == 2:  # delta: move right and up
            if i + 2 > end:
                break
            column, row = column + data[i], row + data[i + 1]
            i += 2
        else:  # an absolute run of `value` pixels, padded to a whole word
            size = (value + 1) // 2 if rle4 else value
            i += size + (size & 1)
            column += value
    else:
        return None
    return min(height, row + (column > 0)), height
