"""Turn what a caller passes (path, bytes, array) into a checked numpy image.

Sizes and decoded bytes are checked from the header before any pixel is decoded, whatever the
caller imported first, so a hostile header cannot exhaust memory. Files are read with a byte limit
and only if they are regular files, so ``/dev/zero`` or a FIFO cannot hang or fill memory. An EXIF
orientation is honoured, as every image viewer does, and said in the result.

What a file is is decided by its content, not its name: a PNG, JPEG, TIFF, BMP, WebP or PNM signature
is read as that format even in a file named ``.dcm`` (a GIF's is refused as an image, not as a broken
DICOM), a DICOM (``DICM`` at byte 128) is read
as DICOM whatever its name, and only a ``.dcm`` or ``.dicom`` file with neither is read as a DICOM
without its preamble.

One picture per file: a multi-page TIFF, an animated PNG or an animated WebP is refused
(``UnsupportedImageError``), as a multi-frame DICOM is, rather than answered from a first frame that
may be a blank page, a preview or the other hand. TIFF pages that the file itself marks as
reduced-resolution copies (or masks) of the first are not other pictures: the first is read, with a note.

OpenCV's own log lines (``[ERROR:...]`` and libtiff's, for a damaged file) are silenced while boneage
decodes: OpenCV's log level is process-wide, so it is set to silent for the time of each decode and
restored after the last one in flight (another thread's OpenCV messages in that time are silenced too).
"""

from __future__ import annotations

import io
import os
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from boneage.decoded import MAX_DECODED_BYTES, MAX_PIXELS, full_range
from boneage.decoded import Loaded as Loaded  # re-exported, with the two checks: their home before boneage.decoded
from boneage.decoded import check_array as check_array
from boneage.decoded import check_size as check_size
from boneage.errors import ImageReadError, ImageTooLargeError, UnsupportedImageError, printable
from boneage.files import FileTooLargeError, NotRegularFileError, read_regular_file
from boneage.formats import (
    TiffInfo,
    bmp_rle_rows,
    check_png_chunks,
    check_pnm_header,
    png_for_decoder,
    png_frames,
    png_has_transparency,
    png_significant_bits,
    pnm_maxval,
    quiet_warnings,
    tiff_info,
    tiff_pages,
    webp_frames,
)
from boneage.jpeg import (
    MAX_JPEG_MARKERS,
    check_jpeg_exif_segments,
    check_jpeg_scans,
    jpeg_exif,
    jpeg_is_progressive,
    jpeg_segment,
    jpeg_to_decode,
)

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

    ImageInput = str | os.PathLike[str] | os.PathLike[bytes] | bytes | bytearray | memoryview | np.ndarray | PILImage
else:  # Pillow is imported when a PIL image is read, not with boneage
    ImageInput = str | os.PathLike[str] | os.PathLike[bytes] | bytes | bytearray | memoryview | np.ndarray
DICOM_SUFFIXES = (".dcm", ".dicom")  # read as DICOM even without the DICM marker, unless the content is an image format's
# The first bytes of the formats read here (and GIF, refused by name): a file that starts so is not a DICOM
# without its preamble, whose first bytes are a group 0002 or 0008 tag.
SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"II*\0", b"MM\0*", b"II+\0", b"MM\0+", b"BM", b"GIF87a", b"GIF89a")

MAX_BYTES = 512 * 1024 * 1024
# The formats whose header is checked before decoding; OpenCV decodes more (EXR, HDR, PFM, ...).
FORMATS = {"PNG", "JPEG", "MPO", "TIFF", "BMP", "WEBP", "PPM"}
# A second line of defence only: OpenCV reads this when it is first imported, which may be before us.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))

import cv2  # noqa: E402

# EXIF orientation -> how to turn the stored pixels upright (as PIL.ImageOps.exif_transpose does).
ORIENTATIONS: dict[int, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    2: ("mirrored left-right", lambda a: a[:, ::-1]),
    3: ("rotated 180 degrees", lambda a: a[::-1, ::-1]),
    4: ("mirrored top-bottom", lambda a: a[::-1]),
    5: ("transposed", lambda a: a.swapaxes(0, 1)),
    6: ("rotated 90 degrees clockwise", lambda a: np.rot90(a, -1)),
    7: ("transversed", lambda a: np.rot90(a, 2).swapaxes(0, 1)),
    8: ("rotated 90 degrees counter-clockwise", lambda a: np.rot90(a, 1)),
}
# TIFF photometric tags of Lab colour: OpenCV (libtiff) decodes them to an RGB tinted by a and b (a radiograph
# was answered 7 months off), so they are refused, as a PIL image of mode LAB is.
LAB_PHOTOMETRICS = {8: "CIELab", 9: "ICCLab", 10: "ITULab"}
# TIFF ExtraSamples: with associated alpha the colours are stored multiplied by it (TIFF 6.0) and OpenCV decodes
# them as stored; with unassociated alpha at 8 bits, libtiff's RGBA reader (OpenCV's) multiplies them. Either way an
# RGBA radiograph came out darkened where alpha is under its maximum (82.5 months read as 114.1 at alpha 128, probe 16).
ASSOCIATED_ALPHA, UNASSOCIATED_ALPHA = 1, 2
# OpenCV's TIFF decoder applies the orientation itself, even with IMREAD_UNCHANGED.
ORIENT_AFTER_DECODE = {"PNG", "JPEG", "MPO", "WEBP"}


@dataclass(frozen=True)
class Header:
    """What a file's header says, read before any pixel is decoded, so the size limits can refuse a
    decompression bomb cheaply."""

    format: str
    width: int
    height: int
    channels: int  # as OpenCV decodes it
    sample_bytes: int
    orientation: int = 1
    photometric: int | None = None  # TIFF: 0 is MinIsWhite
    maxval: int | None = None  # PGM/PPM: the largest sample value
    significant_bits: int | None = None  # a 16-bit PNG's sBIT
    premultiplied: bool = False  # a TIFF's alpha: the colours decode multiplied by it
    notes: tuple[str, ...] = ()  # what the structure said that the result should (e.g. pages not read)

    @property
    def decoded_bytes(self) -> int:
        """Memory the decoded image would take, checked against ``MAX_DECODED_BYTES`` before decoding."""
        return self.width * self.height * self.channels * self.sample_bytes


# PNG colour type -> channels OpenCV decodes to (a palette can become RGBA).
PNG_CHANNELS = {0: 1, 2: 3, 3: 4, 4: 4, 6: 4}  # gray+alpha decodes as BGRA


def own_header(data: bytes, what: str = "image") -> Header | None:
    """PNG and JPEG, the formats of nearly every radiograph, read here: cheaper than Pillow, as
    tolerant as the decoders (libpng accepts a bad CRC in an ancillary chunk, Pillow does not), and
    it names the size where Pillow's own bomb check would refuse to open the file. None otherwise."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 26 and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return Header("PNG", int(w), int(h), PNG_CHANNELS.get(data[25], 4), 2 if data[24] == 16 else 1)
    if data[:2] == b"\xff\xd8":
        i, markers = 2, 0
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            markers += 1
            if markers > MAX_JPEG_MARKERS:  # 7.5 million empty comments (28 MB) took this walk 28 s
                raise ImageReadError(f"{what} is a JPEG of more than {MAX_JPEG_MARKERS:,} markers before its frame header")
            marker = data[i + 1]
            if marker in (0xD8, 0x01, 0xFF) or 0xD0 <= marker <= 0xD7:
                i += 1 if marker == 0xFF else 2  # fill bytes, markers without a length
                continue
            length = struct.unpack(">H", data[i + 2 : i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
                bits, h, w, components = struct.unpack(">BHHB", data[i + 4 : i + 10])
                return Header("JPEG", int(w), int(h), int(components), 2 if bits > 8 else 1)
            i += 2 + length
    return None


def pillow_header(data: bytes, what: str) -> Header:
    """The other formats' headers, through Pillow (which opens lazily: no pixel is decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        # quiet: bomb and damaged-tag warnings, the checks here decide. Only the formats read here: Pillow's
        # parsers of others walk headers in Python (a 30 MB IM header took 36 s, a GIF of comment blocks 22 s,
        # an ICNS 14 s, to be refused after). MPO opens as JPEG.
        with quiet_warnings(), Image.open(io.BytesIO(data), formats=sorted(FORMATS - {"MPO"})) as im:
            fmt, mode, (width, height) = str(im.format), im.mode, im.size
            orientation = _orientation(im)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{what} has more than the {MAX_PIXELS:,} pixels allowed ({exc})") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error) as exc:
        raise ImageReadError(f"{what} is not a readable image (truncated, or not PNG/JPEG/TIFF/BMP/WebP)") from exc
    if fmt not in FORMATS:
        raise UnsupportedImageError(f"{what} is a {fmt} file; radiographs are read from {', '.join(sorted(FORMATS))}")
    channels = 4 if mode in ("P", "PA") else len(mode) if mode in ("LA", "RGB", "RGBA", "CMYK") else 1
    sample_bytes = 2 if mode.startswith("I;16") else 4 if mode in ("I", "F") else 1
    return Header(fmt, width, height, channels, sample_bytes, orientation)


def _orientation(im: object) -> int:
    """The EXIF orientation tag, without decoding pixels (Pillow's PNG ``getexif`` would)."""
    from PIL import Image

    raw = getattr(im, "info", {}).get("exif")
    if getattr(im, "format", None) == "PNG":
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw)
    else:
        exif = im.getexif()  # type: ignore[attr-defined]
    value = exif.get(0x0112, 1)
    return value if isinstance(value, int) and value in ORIENTATIONS else 1


def exif_orientation(data: bytes) -> int:
    """The orientation of a PNG or JPEG that carries EXIF; 1 when there is none or it cannot be read
    (the image itself may still decode). Pillow's warnings about the rest of a damaged EXIF ("Corrupt
    EXIF data") are kept quiet, and a valid orientation beside them is kept, under ``-W error`` too."""
    if b"Exif" not in data and b"eXIf" not in data:  # a fast byte search, anywhere in the file
        return 1
    from PIL import Image

    if data[:2] == b"\xff\xd8":  # the first EXIF segment alone: Pillow's open would parse them all
        payload = jpeg_exif(data)
        if payload is None:
            return 1
        try:
            with quiet_warnings():
                exif = Image.Exif()
                exif.load(payload)
                value = exif.get(0x0112, 1)
        except Exception:  # noqa: BLE001 - unreadable EXIF is no orientation, as in viewers
            return 1
        return value if isinstance(value, int) and value in ORIENTATIONS else 1
    try:
        with quiet_warnings(), Image.open(io.BytesIO(data)) as im:
            return _orientation(im)
    except Exception:  # noqa: BLE001 - unreadable EXIF is no orientation, as in viewers
        return 1


def structure_checked(header: Header, data: bytes, what: str, tiff: TiffInfo | None = None) -> Header:
    """The format's own bombs refused (see :mod:`boneage.formats` and :mod:`boneage.jpeg`), and the decoded size made
    exact where the header alone under-counts it."""
    if header.format == "PNG":  # its chunks were checked before any parser saw them (read_header)
        if png_has_transparency(data):
            header = replace(header, channels=4)
        frames = png_frames(data)
        if frames > 1:
            raise UnsupportedImageError(f"{what} is an animated PNG of {frames} frames: one radiograph per file is read")
        header = replace(header, significant_bits=png_significant_bits(data))
    elif header.format in ("JPEG", "MPO"):
        check_jpeg_scans(data, what)
        if jpeg_is_progressive(data):  # the decoder keeps every coefficient: 2 bytes per sample more
            header = replace(header, sample_bytes=3)
        if jpeg_segment(data, 0xE2, b"MPF\x00") is not None:  # a multi-picture JPEG: what are the others?
            header = replace(header, notes=header.notes + mpo_file_notes(data, what))
    elif header.format == "TIFF":
        info = tiff or tiff_info(data, what)
        if info.photometric in LAB_PHOTOMETRICS:
            raise UnsupportedImageError(f"{what} is a TIFF of {LAB_PHOTOMETRICS[info.photometric]} colour (photometric "
                                        f"{info.photometric}), which the decoder reads as a tinted RGB: save the "
                                        "radiograph as a grayscale (or RGB) image")
        channels = tiff_channels(info)
        premultiplied = channels >= 4 and (info.extra_samples == ASSOCIATED_ALPHA
                                           or (info.extra_samples == UNASSOCIATED_ALPHA and info.bits <= 8))
        header = replace(header, channels=channels, sample_bytes=max(header.sample_bytes, (info.bits + 7) // 8),
                         photometric=info.photometric, premultiplied=premultiplied)
        if info.tile is not None:
            check_tiff_tile(info.tile, header, what)
        header = replace(header, notes=tiff_pages_note(data, what))
    elif header.format == "WEBP" and webp_frames(data) > 1:
        raise UnsupportedImageError(f"{what} is an animated WebP: one radiograph per file is read")
    elif header.format == "PPM":
        maxval = pnm_maxval(data)
        header = replace(header, maxval=maxval, sample_bytes=2 if (maxval or 0) > 255 else header.sample_bytes)
    return header


def tiff_pages_note(data: bytes, what: str) -> tuple[str, ...]:
    """Refuses a TIFF of several pictures (pages, unless marked as reduced-resolution copies or masks);
    a note when such copies follow the first page, which is the one read."""
    pages = tiff_pages(data)
    if len(pages) <= 1:
        return ()
    if sum(pages) > 1 or not pages[0]:
        many = "more than one page" if sum(pages) > 1 else f"{len(pages)} pages, the first a reduced-resolution copy"
        raise UnsupportedImageError(f"{what} is a TIFF of {many}: one radiograph per file is read "
                                    "(save the page to read as a file of its own)")
    return (f"page 1 of {len(pages)} read: the file marks the others as reduced-resolution copies or masks",)


def check_tiff_tile(tile: tuple[int, int], header: Header, what: str) -> None:
    """libtiff and OpenCV decode a tiled TIFF a whole tile at a time, into buffers of the tile's size
    whatever the image's: a 4 KB TIFF of a 64x64 image whose tile claims 16384x16368 pixels took
    1 GB and 2.6 s to be refused. So a tile is held to the limits of a whole image."""
    width, height = tile
    if width * height > MAX_PIXELS or width * height * header.channels * header.sample_bytes > MAX_DECODED_BYTES:
        raise ImageTooLargeError(f"{what} is a TIFF of {width}x{height}-pixel tiles, more than an image may decode "
                                 f"({MAX_PIXELS:,} pixels, {MAX_DECODED_BYTES // 2**20} MiB)")


def read_header(data: bytes, what: str) -> Header:
    """Format, size, decoded bytes and EXIF orientation, from the header alone, checked against the
    limits before anything is decoded."""
    complete = True
    if data[:2] == b"\xff\xd8":
        check_jpeg_exif_segments(data, what)
    elif data[:8] == b"\x89PNG\r\n\x1a\n":
        complete = check_png_chunks(data, what)  # before Pillow or OpenCV walk them
    elif data[:1] == b"P" and data[1:2] in b"123456fF":
        check_pnm_header(data, what)  # before Pillow parses it
    header = own_header(data, what)
    if header is not None:
        check_size(header.width, header.height, what)
        header = replace(structure_checked(header, data, what), orientation=exif_orientation(data))
    else:
        # a TIFF's tag bomb is refused before Pillow reads the tags too
        tiff = tiff_info(data, what) if data[:4] in (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+") else None
        if tiff is not None:
            check_tiff_alpha(tiff, what)
        header = structure_checked(pillow_header(data, what), data, what, tiff)
        check_size(header.width, header.height, what)
    if header.decoded_bytes > MAX_DECODED_BYTES:
        raise ImageTooLargeError(
            f"{what} ({header.width}x{header.height}, {header.channels} channels of {8 * header.sample_bytes} bits) "
            f"needs {header.decoded_bytes / 2**20:,.0f} MiB decoded, more than the {MAX_DECODED_BYTES // 2**20} MiB "
            "allowed per image"
        )
    if not complete:  # libpng refused it only after printing "PNG input buffer is incomplete" on the caller's stderr
        raise ImageReadError(f"{what} is not a readable image: it ends before its IEND chunk (truncated)")
    return header


def tiff_channels(info: TiffInfo) -> int:
    """The channels OpenCV decodes a TIFF to: its samples, at least 3 for RGB and YCbCr."""
    return max(info.samples, 3 if info.photometric in (2, 6) else 1)


def check_tiff_alpha(info: TiffInfo, what: str) -> None:
    """Premultiplied alpha the decoder drops (grey + alpha) leaves nothing to divide the darkened colours by; checked
    before Pillow opens the file (Pillow 12 cannot open a grey + associated alpha TIFF: a vaguer error)."""
    if info.extra_samples == ASSOCIATED_ALPHA and tiff_channels(info) < 4:
        raise UnsupportedImageError(f"{what} is a TIFF with premultiplied (associated) alpha that the decoder drops, "
                                    "leaving the image darkened: save the radiograph without alpha")


def as_viewers_show(image: np.ndarray, header: Header) -> np.ndarray:
    """What OpenCV leaves undone: a 16-bit MinIsWhite TIFF (as DICOM MONOCHROME1 exports) is not
    inverted, a PGM/PPM whose maxval is under 255 is not scaled to it (it does both at 8 bits and
    for 8-bit TIFFs respectively)."""
    if header.photometric == 0 and image.dtype == np.uint16:
        return np.asarray(65535 - image, dtype=np.uint16)
    if header.maxval and header.maxval < 255 and image.dtype == np.uint8:
        scaled: np.ndarray = np.clip(np.rint(image.astype(np.float32) * (255.0 / header.maxval)), 0, 255).astype(np.uint8)
        return scaled
    return image


def has_image_signature(data: bytes) -> bool:
    """The content starts as a PNG, JPEG, TIFF, BMP, GIF, WebP or PNM file does."""
    return (data.startswith(SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")
            or (data[:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace()))


_quiet = threading.Lock()
_quiet_users = 0
_quiet_saved = 0


@contextmanager
def opencv_silenced() -> Iterator[None]:
    """OpenCV's log (and libtiff's, which it passes on) silent while this is open: a damaged file's
    ``[ERROR:...]`` lines reached a library caller's stderr, whatever boneage made of the file. The level is
    process-wide: the first decode in flight saves and silences it, the last restores it."""
    global _quiet_users, _quiet_saved
    with _quiet:
        if not _quiet_users:
            _quiet_saved = cv2.utils.logging.getLogLevel()
            cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        _quiet_users += 1
    try:
        yield
    finally:
        with _quiet:
            _quiet_users -= 1
            if not _quiet_users:
                cv2.utils.logging.setLogLevel(_quiet_saved)


def bmp_warnings(data: bytes) -> tuple[str, ...]:
    """A compressed (RLE) BMP whose data ends before its last row: the rows left are shown black."""
    rows = bmp_rle_rows(data)
    if rows is None or rows[0] >= rows[1]:
        return ()
    filled, height = rows
    return (f"the BMP's compressed data ends after {filled} of its {height} rows: the other "
            f"{height - filled} are shown black (a file cut short?)",)


def decode(data: bytes, what: str = "image", dicom: bool = False) -> Loaded:
    """``dicom``: read it as DICOM even without the ``DICM`` marker (a ``.dcm`` file), unless its content
    is another format's (:func:`has_image_signature`)."""
    if not data:
        raise ImageReadError(f"{what} is empty")
    if data[128:132] == b"DICM" or (dicom and not has_image_signature(data)):
        from boneage.dicom import read_dicom  # pydicom (extra: dicom) only for a DICOM

        return read_dicom(data, what)
    header = read_header(data, what)
    jpeg = header.format in ("JPEG", "MPO")
    # a PNG without the ancillary chunks OpenCV ignores: libpng warned of damaged ones on the caller's stderr
    to_decode = jpeg_to_decode(data, header.width, header.height, what) if jpeg else \
        png_for_decoder(data) if header.format == "PNG" else data
    try:
        with opencv_silenced():
            image = cv2.imdecode(np.frombuffer(to_decode, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageReadError(f"{what} could not be decoded: {exc}") from exc
    if image is None:
        if jpeg:
            raise ImageReadError(f"{what} is not a readable image: a truncated JPEG, or one whose compressed data "
                                 f"ends before the {header.width}x{header.height} frame its header declares is filled")
        raise ImageReadError(f"{what} is not a readable image (truncated, or not PNG/JPEG/TIFF/BMP/WebP)")
    if image.ndim == 3 and image.shape[2] >= 3:  # OpenCV decodes to BGR(A)
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    if header.premultiplied and image.ndim == 3 and image.shape[2] == 4:
        image = unpremultiplied(image)
    image, notes = full_range(image, declared_max(image, header), what)  # before a MinIsWhite TIFF is inverted
    image = as_viewers_show(image, header)
    notes += header.notes
    if header.orientation != 1:
        description, turn = ORIENTATIONS[header.orientation]
        if header.format in ORIENT_AFTER_DECODE:  # OpenCV has already turned a TIFF
            image = np.ascontiguousarray(turn(image))
        tag = "TIFF" if header.format == "TIFF" else "EXIF"
        notes += (f"{tag} orientation {header.orientation} applied: the stored image was {description} to show it upright",)
    # an RLE BMP's rows left unfilled are one colour: only then is its data walked (a second for 3 MP)
    unfilled = header.format == "BMP" and bool((image[0] == image[0, 0]).all())
    return Loaded(check_array(image, what), notes, warnings=bmp_warnings(data) if unfilled else ())


def unpremultiplied(image: np.ndarray) -> np.ndarray:
    """RGBA whose colours decoded multiplied by alpha (:data:`ASSOCIATED_ALPHA`) as plain alpha holds them: each
    colour divided by alpha (rounded; 0 where alpha is 0, as Pillow's ``RGBa`` to ``RGBA``), one channel at a time in
    uint32 (65535 x 65535 fits)."""
    top = np.iinfo(image.dtype).max
    alpha = image[..., 3].astype(np.uint32)
    safe = np.maximum(alpha, 1)
    out = image.copy()
    for c in range(3):
        value = (image[..., c].astype(np.uint32) * top + safe // 2) // safe
        out[..., c] = np.where(alpha > 0, np.minimum(value, top), 0)
    return out


def declared_max(image: np.ndarray, header: Header) -> int | None:
    """The largest value a 16-bit image's samples take by its file's word: a PGM's maxval; a PNG's sBIT of N bits
    when its values fit in N bits (else they are scaled to the 16-bit range, as the PNG specification says they
    are). None: the values decide (:func:`boneage.decoded.full_range`)."""
    if image.dtype != np.uint16:
        return None
    if header.maxval and header.maxval > 255:
        return header.maxval
    bits = header.significant_bits
    if bits is not None and bits < 16:
        return (1 << bits) - 1 if int(image.max()) < 1 << bits else 65535
    return None


def read_path(path: Path) -> bytes:
    """The file's bytes, if it is a regular file of at most MAX_BYTES (see :mod:`boneage.files`)."""
    what = str(path)
    try:
        return read_regular_file(path, MAX_BYTES)
    except FileNotFoundError as exc:
        raise ImageReadError(f"{what}: no such file") from exc
    except IsADirectoryError as exc:
        raise ImageReadError(f"{what} is a directory, not an image") from exc
    except NotRegularFileError as exc:
        raise ImageReadError(f"{what} is not a regular file (a device, FIFO or socket)") from exc
    except FileTooLargeError as exc:
        raise ImageTooLargeError(f"{what} is larger than {MAX_BYTES // 2**20} MiB") from exc
    except ValueError as exc:  # e.g. a NUL byte in the path
        raise ImageReadError(f"{what!r} is not a usable path: {exc}") from exc
    except OSError as exc:
        raise ImageReadError(f"{what} cannot be read: {exc.strerror or exc}") from exc


def path_text(source: str | os.PathLike[str] | os.PathLike[bytes]) -> str:
    """A path as text: a ``DirEntry``'s or ``Path``'s path, a bytes path decoded as the file system does
    (``os.fsdecode``); an object whose ``__fspath__`` gives neither text nor bytes is an ``UnsupportedImageError``."""
    try:
        return os.fsdecode(os.fspath(source))
    except TypeError as exc:
        raise UnsupportedImageError(f"cannot read an image from a {type(source).__name__}: its __fspath__ "
                                    "gives no str or bytes path") from exc


def source_name(source: object) -> str | None:
    """What a prediction names as its source: the path of a path (``os.scandir``'s entries give their path,
    not ``<DirEntry ...>``); None for bytes and arrays."""
    if isinstance(source, (str, os.PathLike)):
        try:
            return path_text(source)
        except UnsupportedImageError:
            return None
    return None


# A PIL image's mode -> the mode it is read in, as the file reader (OpenCV) decodes that kind of file: a palette to
# RGB (RGBA where it has a transparent entry), gray with alpha to RGBA (premultiplied La unmultiplied first, through
# LA), 1-bit to 0/255, CMYK and YCbCr to RGB.
PIL_MODES = {"1": "L", "L": "L", "P": "RGB", "PA": "RGBA", "LA": "RGBA", "La": "RGBA", "RGB": "RGB", "RGBA": "RGBA",
             "RGBa": "RGBA", "RGBX": "RGB", "CMYK": "RGB", "YCbCr": "RGB", "I;16": "I;16", "I;16L": "I;16L",
             "I;16B": "I;16B", "I;16N": "I;16N", "I": "I", "F": "F"}
PIL_PIXEL_BYTES = {"L": 1, "RGB": 3, "RGBA": 4, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2, "I": 4, "F": 4}


@dataclass
class _Reading:
    """A PIL image being read: its lock and how many threads hold or wait for it."""

    lock: threading.Lock
    users: int = 0


_readings_lock = threading.Lock()
_readings: dict[int, _Reading] = {}  # id(image) -> its reading, while some thread reads it


@contextmanager
def pil_image_held(image: object) -> Iterator[None]:
    """One thread at a time reads a given PIL image; other images are read at once. Pillow's loaders share
    the image's file and decoder state: two threads loading one lazily opened image (one image given twice
    to ``predict_many``, or to ``predict`` from two threads) raised an ``AssertionError`` that lost the batch,
    or gave wrong pixels and wrong bone ages silently. Keyed by ``id``, which the image, alive until this
    ends, keeps to itself (a PIL image is unhashable); the entry goes with its last user."""
    key = id(image)
    with _readings_lock:
        reading = _readings.setdefault(key, _Reading(threading.Lock()))
        reading.users += 1
    try:
        with reading.lock:
            yield
    finally:
        with _readings_lock:
            reading.users -= 1
            if not reading.users:
                del _readings[key]


# What Pillow raises for an image it cannot read: truncated, closed, or damaged (its loaders check their own
# state with assert, and index tables the file gives).
PIL_READ_ERRORS = (OSError, ValueError, SyntaxError, struct.error, EOFError, AssertionError, IndexError, KeyError)


# MPO picture types that are reduced copies of the first picture, as a TIFF's reduced-resolution pages are
MPO_PREVIEWS = frozenset({"Large Thumbnail (VGA Equivalent)", "Large Thumbnail (Full HD Equivalent)"})


def mpo_notes(index: Any, what: str) -> tuple[str, ...]:
    """A multi-picture JPEG, by its MP index as Pillow reads it (``mpinfo``), is read from its first picture as a
    multi-page TIFF is: with a note where the others are previews of it, refused (:class:`UnsupportedImageError`)
    where they are other pictures (multi-angle, disparity, panorama, undefined: the other hand, a negative). It was
    answered from the first whatever the others were (probe 16)."""
    entries = (index if isinstance(index, dict) else {}).get(0xB002) or []
    kinds = [str((e.get("Attribute") or {}).get("MPType")) if isinstance(e, dict) else "Unknown" for e in entries[1:]]
    if not kinds:
        return ()
    if all(kind in MPO_PREVIEWS for kind in kinds):
        return (f"the file also holds {len(kinds)} reduced preview(s) of its picture (MPO), not read",)
    raise UnsupportedImageError(f"{what} is a multi-picture JPEG (MPO) of {len(kinds) + 1} pictures "
                                f"({printable(', '.join(sorted(set(kinds))))[:200]}): one radiograph per file is read")


def mpo_file_notes(data: bytes, what: str) -> tuple[str, ...]:
    """:func:`mpo_notes` of a file's bytes (Pillow reads the MP index from the header; no pixel is decoded); an index
    that does not read is refused, as it may hide any picture."""
    from PIL import Image

    try:
        with quiet_warnings(), Image.open(io.BytesIO(data), formats=["JPEG"]) as im:
            index = getattr(im, "mpinfo", None)
    except PIL_READ_ERRORS:
        index = None
    if not isinstance(index, dict):  # Pillow drops a malformed index with a warning and reads a plain JPEG
        raise UnsupportedImageError(f"{what} is a multi-picture JPEG whose index cannot be read: what its other "
                                    "pictures are is unknown (one radiograph per file is read)")
    return mpo_notes(index, what)


def read_pil(image: PILImage) -> Loaded:
    """A PIL image (``PIL.Image.open(...)`` or one made in memory), read as its file would be: checked for size
    before its pixels are loaded, one frame only (a multi-page TIFF or an animated image is refused; MPO reads its
    first picture as a JPEG file does), its EXIF orientation applied with the same note, its mode as
    :data:`PIL_MODES` says, 16-bit values by their bit depth (:func:`boneage.decoded.full_range`). Mode ``I``
    (32-bit) is read as 16-bit when its values fit in 0-65535. Another mode is an :class:`UnsupportedImageError`.
    One thread at a time reads one image object (:func:`pil_image_held`)."""
    what = "the PIL image"
    with pil_image_held(image):
        array, orientation = _pil_pixels(image, what)
        pages = mpo_notes(getattr(image, "mpinfo", None), what) if getattr(image, "format", None) == "MPO" else ()
        white_is_zero = _tiff_photometric(image) == 0
    pixels, notes = full_range(check_array(array, what), None, what)
    if white_is_zero and pixels.dtype == np.uint16:  # Pillow inverts MinIsWhite at 1 and 8 bits only; as the file
        pixels = np.asarray(65535 - pixels, dtype=np.uint16)  # reader does, after the values are scaled (12 bits)
    notes += pages
    if orientation != 1:
        description, turn = ORIENTATIONS[orientation]
        pixels = np.ascontiguousarray(turn(pixels))
        notes += (f"EXIF orientation {orientation} applied: the stored image was {description} to show it upright",)
    return Loaded(pixels, notes)


def _pil_pixels(image: PILImage, what: str) -> tuple[np.ndarray, int]:
    """The image's pixels in the mode :data:`PIL_MODES` gives, and its EXIF orientation, after the checks
    :func:`read_pil` lists; every error Pillow raises is typed."""
    from PIL import Image

    try:
        mode, (width, height) = image.mode, image.size
        frames = getattr(image, "n_frames", 1)
        fmt = image.format
    except (*PIL_READ_ERRORS, AttributeError) as exc:
        raise ImageReadError(f"{what} cannot be read: {exc}") from exc
    if isinstance(frames, int) and frames > 1 and fmt != "MPO":
        raise UnsupportedImageError(f"{what} has {frames} frames ({fmt or 'in memory'}): one radiograph per image is "
                                    "read (pass the file's path to read a TIFF whose other pages are reduced copies)")
    if mode not in PIL_MODES:
        raise UnsupportedImageError(f"{what} is of mode {mode!r}; readable modes: {', '.join(PIL_MODES)}")
    target = PIL_MODES[mode]
    if mode == "P" and "transparency" in image.info:
        target = "RGBA"
    check_size(width, height, what)
    if width * height * PIL_PIXEL_BYTES[target] > MAX_DECODED_BYTES:
        raise ImageTooLargeError(f"{what} ({width}x{height}, mode {mode}) needs more than the "
                                 f"{MAX_DECODED_BYTES // 2**20} MiB allowed per image")
    try:  # decoded outside the process-wide warnings lock: the estimator's threads decode other images at once
        image.load()  # a PNG's eXIf after its pixels is read with them
        with quiet_warnings():
            orientation = _pil_orientation(image)
        if mode == "La":  # premultiplied alpha: Pillow converts it to LA only, then LA on as a file's LA
            image = image.convert("LA")
        array = np.asarray(image if target == image.mode else image.convert(target))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{what} has more than the {MAX_PIXELS:,} pixels allowed ({exc})") from exc
    except PIL_READ_ERRORS as exc:  # truncated, closed or damaged
        raise ImageReadError(f"{what} cannot be read: {' '.join(str(exc).split())[:300] or type(exc).__name__}") from exc
    if target == "I":  # 32-bit: a 16-bit image as older Pillows open a 16-bit PNG, or no grey levels at all
        if array.size and (int(array.min()) < 0 or int(array.max()) > 65535):
            raise UnsupportedImageError(f"{what} is of mode I with values from {int(array.min())} to "
                                        f"{int(array.max())}: grey levels lie within 0-65535")
        array = array.astype(np.uint16)
    return array, orientation


def _tiff_photometric(image: object) -> int | None:
    """A TIFF's photometric tag as Pillow read it (0 is MinIsWhite), None for another image."""
    try:
        value = getattr(image, "tag_v2", {}).get(262)
        return int(value) if value is not None else None
    except (TypeError, ValueError, *PIL_READ_ERRORS):
        return None


def _pil_orientation(image: object) -> int:
    """The EXIF orientation of a PIL image, as :func:`exif_orientation` reads a file's (1 where it cannot be read)."""
    try:
        return _orientation(image)
    except Exception:  # noqa: BLE001 - unreadable EXIF is no orientation, as in viewers
        return 1


def read_image(source: ImageInput) -> Loaded:
    """A checked image from a path, encoded bytes, an array or a PIL image, with notes on what was done to
    it. A uint16 array is read as :func:`boneage.decoded.full_range` reads a 16-bit file; a PIL image as
    :func:`read_pil` says."""
    try:
        return _read(source)
    except MemoryError as exc:  # the sizes were checked first: the machine is short of memory for an allowed one
        name = source_name(source) or f"the {type(source).__name__} image"
        raise ImageTooLargeError(f"{name} could not be read: not enough memory left to read an image of "
                                 "its size (fewer images at once, or a smaller one)") from exc


def _read(source: ImageInput) -> Loaded:
    """:func:`read_image`, each kind of source by its reader."""
    if isinstance(source, np.ndarray):
        image, notes = full_range(check_array(source))
        return Loaded(image, notes)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode(encoded_bytes(source), "image bytes")
    if isinstance(source, (str, os.PathLike)):
        path = Path(path_text(source))
        return decode(read_path(path), str(path), dicom=path.suffix.lower() in DICOM_SUFFIXES)
    pil = sys.modules.get("PIL.Image")  # a PIL image exists only once Pillow is imported
    if pil is not None and isinstance(source, pil.Image):
        return read_pil(source)
    raise UnsupportedImageError(f"cannot read an image from a {type(source).__name__}")


def encoded_bytes(source: bytes | bytearray | memoryview) -> bytes:
    """The bytes of an encoded image, at most ``MAX_BYTES`` as a file is (checked before they are copied);
    a released ``memoryview`` is an :class:`UnsupportedImageError`."""
    try:
        size = source.nbytes if isinstance(source, memoryview) else len(source)
    except ValueError as exc:  # "operation forbidden on released memoryview object"
        raise UnsupportedImageError(f"cannot read image bytes from this {type(source).__name__}: {exc}") from exc
    if size > MAX_BYTES:
        raise ImageTooLargeError(f"the image bytes are {size / 2**20:,.0f} MiB, more than the "
                                 f"{MAX_BYTES // 2**20} MiB an image file may take")
    return bytes(source)


def load_image(source: ImageInput) -> np.ndarray:
    """A checked image array from a path, encoded bytes, an array or a PIL image."""
    return read_image(source).image
