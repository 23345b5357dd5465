"""DICOM radiographs (extra: dicom), read as a radiologist's viewer shows them.

Why a module of its own: a DICOM's stored values are not what is shown. The modality LUT (or
rescale slope and intercept) turns them into the modality's values, the VOI LUT or window picks
the range a radiologist reads, and MONOCHROME1 (or an INVERSE presentation LUT shape) says that the
lowest value is white. Each of those is one value-to-grey mapping, so they are composed into one
lookup table over every possible stored value and applied in one pass: no float copy of the image.

The header is checked before any pixel is decoded (size, depth, frames, colour, transfer syntax,
decoder), as for the other formats. Patient tags are read as stored text and never echoed; pydicom's
own warnings, which may quote a value, are silenced while a file is read.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from boneage import rle
from boneage.decoded import MAX_DECODED_BYTES, Loaded, check_array, check_size
from boneage.errors import (
    BoneAgeError,
    ImageReadError,
    ImageTooLargeError,
    MissingDependencyError,
    UnsupportedImageError,
)
from boneage.extras import DICOM, require
from boneage.jpeg import MAX_JPEG_MARKERS, check_jpeg_exif_segments, check_jpeg_frame, check_jpeg_scans
from boneage.patient import HeaderPatient

MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
RLE_LOSSLESS = "RLE Lossless"  # the transfer syntax's name, as ImageTags.syntax holds it
ROWS_PER_PASS = 1024  # the lookup's index temporaries stay ~64 MB on an 8000-pixel-wide plate


def is_dicom(data: bytes) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then ``DICM``."""
    return data[128:132] == b"DICM"


@dataclass(frozen=True)
class ImageTags:
    """What the pixel data must be, from the header, checked before decoding."""

    rows: int
    columns: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str
    syntax: str  # the transfer syntax's name, for messages and the note
    compressed: bool = False


def read_dicom(data: bytes, what: str) -> Loaded:
    """A checked grayscale image, what was done to it, and the sex and age its header holds."""
    require("pydicom", DICOM, f"{what} is DICOM: reading it")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's value warnings may quote a patient's tag
        ds = _parse(data, what)
        try:  # pydicom converts a value when it is first used: a malformed one raises there
            tags = image_tags(ds, what, data)
            stored = _decode(ds, tags, what, data)
            table, steps = display_table(ds, tags, what, stored)
            patient = header_patient(ds)
        except (BoneAgeError, MemoryError):
            raise
        except Exception as exc:  # e.g. Rows of 3 bytes: BytesLengthException, exit 70 (fourth probe)
            raise ImageReadError(f"{what}: its DICOM header holds a malformed value ({type(exc).__name__})") from exc
    image = _lookup(stored, table)
    check_not_blanked(stored, image, steps, what)
    note = f"read as DICOM ({tags.syntax}, {tags.bits_stored} of {tags.bits_allocated} bits{''.join(', ' + s for s in steps)})"
    return Loaded(check_array(image, what), (note,), patient=patient)


def _parse(data: bytes, what: str) -> Any:
    from pydicom import dcmread

    check_structure(data, what)
    # values over DEFER_BYTES (the pixel data, a large private element) stay in ``data`` unread:
    # pydicom would copy them (a 314 MB file peaked at 845 MB). A deflated dataset is inflated into
    # a buffer of pydicom's own, so it is read whole.
    defer = None if meta_syntax(data)[0] == DEFLATED else DEFER_BYTES
    try:
        ds = dcmread(io.BytesIO(data), force=not is_dicom(data), defer_size=defer)
    except MemoryError:
        raise
    except Exception as exc:  # pydicom's messages may quote a value: its type only
        raise ImageReadError(f"{what} is not a readable DICOM file ({type(exc).__name__}; truncated or corrupted)") from exc
    if not is_dicom(data) and "SOPClassUID" not in ds and "Rows" not in ds:
        raise ImageReadError(f"{what} is not a DICOM file (no DICM marker and no DICOM image elements)")
    return ds


DEFLATED = "1.2.840.10008.1.2.1.99"  # Deflated Explicit VR Little Endian
DEFER_BYTES = 2**20
MAX_INFLATED_BYTES = MAX_DECODED_BYTES + 64 * 2**20
MAX_ELEMENTS = 100_000  # a radiograph's header holds a few hundred; pydicom takes ~20 us for each
LONG_VRS = (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")


MAX_META_ELEMENTS = 1_000  # a file meta group holds about ten


def meta_syntax(data: bytes, what: str = "the DICOM") -> tuple[str | None, int]:
    """The transfer syntax its file meta group names (None without one), and where the dataset
    after that group begins; read as pydicom reads the group, with or without the preamble. A
    group of more than MAX_META_ELEMENTS elements is refused (2 million, 15 MB: 44 s)."""
    i, syntax, count = (132 if is_dicom(data) else 0), None, 0
    while i + 8 <= len(data):
        group, element = struct.unpack("<HH", data[i : i + 4])
        if group != 2:
            break
        count += 1
        if count > MAX_META_ELEMENTS:
            raise ImageReadError(f"{what} has a DICOM file meta group of more than {MAX_META_ELEMENTS:,} elements")
        vr = data[i + 4 : i + 6]
        if not vr.isalpha():  # implicit VR: a 4-byte length
            head, length = 8, struct.unpack("<I", data[i + 4 : i + 8])[0]
        elif vr in LONG_VRS:
            head, length = 12, struct.unpack("<I", data[i + 8 : i + 12].ljust(4, b"\0"))[0]
        else:
            head, length = 8, struct.unpack("<H", data[i + 6 : i + 8])[0]
        if element == 0x0010:
            syntax = data[i + head : i + head + length].rstrip(b"\0 ").decode("ascii", "replace")
        i += head + length
    return syntax, i


def check_structure(data: bytes, what: str) -> None:
    """What pydicom's parse would cost, bounded before it runs: a deflated dataset may inflate to
    no more than MAX_INFLATED_BYTES (the pixel data allowed per image, and 64 MiB for the rest;
    a 1.5 MB file inflating to 1.5 GB was a MemoryError, exit 70), and a dataset may hold no more
    than MAX_ELEMENTS elements (2 million empty ones, 16 MB, took pydicom 42 s)."""
    syntax, start = meta_syntax(data, what)
    if syntax == DEFLATED:
        data, start = check_inflated_size(data[start:], what), 0
    if syntax is None:  # no meta group: pydicom guesses from the first element, so does this
        explicit, little = data[start + 4 : start + 6].isalpha(), True
    else:
        explicit, little = syntax != "1.2.840.10008.1.2", syntax != "1.2.840.10008.1.2.2"
    if count_elements(data, start, little, explicit, MAX_ELEMENTS) > MAX_ELEMENTS:
        raise ImageReadError(f"{what} is a DICOM of more than {MAX_ELEMENTS:,} elements; a radiograph's has hundreds")


def check_inflated_size(deflated: bytes, what: str) -> bytes:
    """The inflated dataset, inflated in chunks and refused once past MAX_INFLATED_BYTES (pydicom
    inflates it whole); empty if it is corrupted (pydicom's own read then says so)."""
    stream, chunks, total, pending = zlib.decompressobj(-zlib.MAX_WBITS), [], 0, deflated
    try:
        while True:
            chunks.append(stream.decompress(pending, 16 * 2**20))
            total += len(chunks[-1])
            if total > MAX_INFLATED_BYTES:
                raise ImageTooLargeError(f"{what} is a deflated DICOM that inflates to more than the "
                                         f"{MAX_INFLATED_BYTES // 2**20} MiB allowed")
            pending = stream.unconsumed_tail
            if stream.eof or (not pending and len(chunks[-1]) < 16 * 2**20):
                return b"".join(chunks)
    except zlib.error:
        return b""


def count_elements(data: bytes, start: int, little: bool, explicit: bool, limit: int) -> int:
    """Element, item and delimiter headers from ``start``, counted up to ``limit + 1`` without
    reading a value: sequences and their items are entered (pydicom parses what they hold), other
    values and the fragments of encapsulated pixel data skipped. Stops at a header that runs past
    the end (pydicom's read then says what is wrong)."""
    order, end, i, count, fragments = ("<" if little else ">"), len(data), start, 0, False
    while count <= limit and i + 8 <= end:
        group, element, length = struct.unpack_from(order + "HHI", data, i)
        head, undefined = 8, length == 0xFFFFFFFF
        if group == 0xFFFE:  # items and delimiters have no VR
            enter = element == 0xE000 and not fragments
            fragments = fragments and element != 0xE0DD
        elif explicit and data[i + 4 : i + 6] in LONG_VRS:
            if i + 12 > end:
                break
            head, length = 12, struct.unpack_from(order + "I", data, i + 8)[0]
            undefined = length == 0xFFFFFFFF
            enter = data[i + 4 : i + 6] == b"SQ" or undefined
        elif explicit:
            length, enter, undefined = struct.unpack_from(order + "H", data, i + 6)[0], False, False
        else:
            enter = undefined
        if undefined and (group, element) == (0x7FE0, 0x0010):
            fragments = True  # encapsulated pixel data: its items are compressed bytes
        count += 1
        i += head if enter or undefined else head + length
    return count


def _int(ds: Any, keyword: str, what: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    if value is None or value == "":
        raise ImageReadError(f"{what}: its DICOM header lacks {keyword}, which an image needs")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ImageReadError(f"{what}: its DICOM {keyword} is not a whole number") from exc


def image_tags(ds: Any, what: str, data: bytes = b"") -> ImageTags:
    """The image's facts, refused here if they cannot be a single grayscale radiograph or would
    decode to more than the limits allow."""
    if "PixelData" not in ds:
        kind = "float pixel data" if ("FloatPixelData" in ds or "DoubleFloatPixelData" in ds) else "no image"
        if kind == "no image" and "Image Storage" in _sop_class(ds):  # an image's file, cut before its pixels
            raise ImageReadError(f"{what} is a truncated DICOM: its header is that of an image, but no pixel data follows")
        raise UnsupportedImageError(f"{what} is a DICOM {_sop_class(ds)} with {kind}: radiographs are read "
                                    "from DICOM images (e.g. CR, DX, secondary capture)")
    rows, columns = _int(ds, "Rows", what), _int(ds, "Columns", what)
    check_size(columns, rows, what)
    photometric = str(ds.get("PhotometricInterpretation", "") or "").strip().upper()
    samples = _int(ds, "SamplesPerPixel", what, 1)
    if samples != 1 or photometric not in MONOCHROME:
        # only a value the standard defines is shown: the tag's text, whatever it holds, never is
        shown = photometric if photometric in PHOTOMETRIC_VALUES else "not one the standard defines"
        raise UnsupportedImageError(f"{what} is a colour DICOM ({shown if photometric else 'no PhotometricInterpretation'}, "
                                    f"{samples} samples per pixel): radiographs are MONOCHROME1 or MONOCHROME2")
    frames = _int(ds, "NumberOfFrames", what, 1)
    if frames != 1:
        raise UnsupportedImageError(f"{what} is a DICOM of {frames} frames: one radiograph per file is read")
    bits = _int(ds, "BitsAllocated", what)
    if bits not in (8, 16):
        raise UnsupportedImageError(f"{what} has {bits} bits allocated per pixel; DICOM radiographs are read at 8 or 16")
    stored = _int(ds, "BitsStored", what, bits)
    if not 1 <= stored <= bits:
        raise ImageReadError(f"{what}: its DICOM BitsStored ({stored}) does not fit its BitsAllocated ({bits})")
    representation = _int(ds, "PixelRepresentation", what, 0)
    if rows * columns * bits // 8 > MAX_DECODED_BYTES:
        raise ImageTooLargeError(f"{what} ({columns}x{rows}, {bits} bits) needs more than the "
                                 f"{MAX_DECODED_BYTES // 2**20} MiB allowed per image decoded")
    syntax = _syntax(ds, what)
    tags = ImageTags(rows, columns, bits, stored, representation == 1, photometric, syntax.name, syntax.is_compressed)
    if not syntax.is_compressed:
        expected, held = rows * columns * bits // 8, len(_native_buffer(ds, data)[0])
        if held < expected:
            raise ImageReadError(f"{what} is truncated: its pixel data holds {held:,} of the {expected:,} bytes its "
                                 "header describes")
    else:
        check_frame(ds.PixelData, syntax, tags, what)
    return tags


MAX_JP2_BOXES = 1_000  # millions of 8-byte boxes would be walked in Python
MAX_J2K_TILES = 16_384  # a 64 MP plate in 64x64 tiles; real ones are one tile or a few dozen
MAX_FRAGMENTS = 65_536  # a frame is one fragment or a few hundred (64 KB pieces of a 40 MB plate: 640)


def check_frame(pixel_data: bytes, syntax: Any, tags: ImageTags, what: str) -> None:
    """The compressed frame's own header, read before a decoder sees it: it must describe the
    Rows x Columns grayscale image of the DICOM header. Decoders trust the frame, not the DICOM
    header: a 7 MB JPEG frame of 6000x6000 in a 300x240 DICOM was decoded whole; a JP2 box of
    length 0 made pydicom loop forever; an RLE segment of 20 MB decoded to 1.3 GB (RLE frames are
now decoded by ``boneage.rle``, which stops at the image's size)."""
    from pydicom.encaps import generate_frames
    from pydicom.uid import JPEG2000TransferSyntaxes, JPEGLSTransferSyntaxes, JPEGTransferSyntaxes, RLELossless

    if _fragments(pixel_data, MAX_FRAGMENTS) > MAX_FRAGMENTS:  # 1M fragments: 10 MB, 5 s and 190 MB to join
        raise ImageReadError(f"{what}: its DICOM pixel data is split into more than {MAX_FRAGMENTS:,} fragments")
    try:
        frame = next(generate_frames(pixel_data, number_of_frames=1))
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed item structure is a read error
        raise ImageReadError(f"{what}: its DICOM pixel data is not valid encapsulated data ({type(exc).__name__})") from exc
    if syntax == RLELossless:
        rle.segments(frame, tags.bits_allocated, what)  # decoded by boneage.rle, within its size
        return
    if syntax in JPEG2000TransferSyntaxes:
        size = _j2k_size(frame, what)
    elif syntax in JPEGTransferSyntaxes or syntax in JPEGLSTransferSyntaxes:
        check_jpeg_scans(frame, what)
        check_jpeg_exif_segments(frame, what)  # Pillow decodes JPEG Baseline frames
        size = _jpeg_size(frame)
    else:  # every other syntax with a decoder was refused or handled above
        raise UnsupportedImageError(f"{what} is compressed as {syntax.name}, which boneage cannot check before decoding")
    if size is None:
        raise ImageReadError(f"{what}: its compressed frame ({syntax.name}) has no readable header")
    width, height, components = size
    if (width, height, components) != (tags.columns, tags.rows, 1):
        raise ImageReadError(f"{what}: its compressed frame is {width}x{height} with {components} component(s), "
                             f"not the {tags.columns}x{tags.rows} grayscale image its DICOM header describes")
    if syntax in JPEGTransferSyntaxes:  # its data must fill that frame, as a JPEG file's must (sixth probe)
        check_jpeg_frame(frame, width, height, what)


def _fragments(pixel_data: bytes, limit: int) -> int:
    """How many fragment items follow the basic offset table, counted up to ``limit + 1``: pydicom
    keeps a bytes object per fragment (18 times the file's size for 2-byte fragments), twice."""
    count, i = -1, 0
    while count <= limit and i + 8 <= len(pixel_data):
        group, element, length = struct.unpack("<HHI", pixel_data[i : i + 8])
        if (group, element) != (0xFFFE, 0xE000):
            break
        count, i = count + 1, i + 8 + length
    return count


def _jpeg_size(frame: bytes) -> tuple[int, int, int] | None:
    """Width, height and components from the first start-of-frame marker (JPEG's SOF0-15 and
    JPEG-LS's SOF55), or None if the markers before it are not well formed."""
    if frame[:2] != b"\xff\xd8":
        return None
    i, markers = 2, 0
    while i + 10 <= len(frame) and markers <= MAX_JPEG_MARKERS:
        if frame[i] != 0xFF:
            return None
        marker, markers = frame[i + 1], markers + 1
        if marker in (0xD8, 0x01, 0xFF) or 0xD0 <= marker <= 0xD7:
            i += 1 if marker == 0xFF else 2
            continue
        if marker in (0xDA, 0xD9):  # a scan or the end before any frame header
            return None
        if (0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)) or marker == 0xF7:
            h, w, components = struct.unpack(">HHB", frame[i + 5 : i + 10])
            return int(w), int(h), int(components)
        i += 2 + struct.unpack(">H", frame[i + 2 : i + 4])[0]
    return None


def _j2k_size(frame: bytes, what: str) -> tuple[int, int, int] | None:
    """Width, height and components from the codestream's SIZ marker, inside a JP2 wrapper if
    there is one; its boxes are walked as pydicom walks them, refusing a box that would not
    move the walk forward (pydicom loops forever on a length of 0)."""
    offset, boxes = 0, 0
    if frame.startswith(b"\x00\x00\x00\x0cjP  "):
        offset = 12
        while True:
            boxes += 1  # a JP2 file has about five boxes before its codestream
            if offset + 8 > len(frame) or boxes > MAX_JP2_BOXES:
                return None
            length, kind = struct.unpack(">I4s", frame[offset : offset + 8])
            if kind == b"jp2c":
                offset += 8
                break
            if length < 8:
                return None
            offset += length
    if frame[offset : offset + 4] != b"\xff\x4f\xff\x51" or len(frame) < offset + 42:
        return None
    x, y, x0, y0, tile_w, tile_h, tile_x0, tile_y0 = struct.unpack(">8I", frame[offset + 8 : offset + 40])
    (components,) = struct.unpack(">H", frame[offset + 40 : offset + 42])
    if not (x0 < x and y0 < y and tile_w and tile_h and tile_x0 <= x0 and tile_y0 <= y0):
        return None
    tiles = -(-(x - tile_x0) // tile_w) * -(-(y - tile_y0) // tile_h)
    if tiles > MAX_J2K_TILES:
        raise ImageReadError(f"{what}: its JPEG 2000 frame has {tiles:,} tiles, more than the {MAX_J2K_TILES:,} allowed")
    return x - x0, y - y0, components


PHOTOMETRIC_VALUES = frozenset({"MONOCHROME1", "MONOCHROME2", "PALETTE COLOR", "RGB", "YBR_FULL", "YBR_FULL_422",
                                "YBR_PARTIAL_422", "YBR_PARTIAL_420", "YBR_ICT", "YBR_RCT", "HSV", "ARGB", "CMYK", "XYB"})


def _sop_class(ds: Any) -> str:
    uid = ds.get("SOPClassUID") or getattr(ds.get("file_meta"), "MediaStorageSOPClassUID", None)
    name = getattr(uid, "name", None)
    return f"'{name}'" if name and name != str(uid) else "object"  # a registered name, never free text


def _syntax(ds: Any, what: str) -> Any:
    """The transfer syntax, refused here if no installed decoder reads it."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.pixels.decoders.base import get_decoder
    from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    if not getattr(ds.get("file_meta"), "TransferSyntaxUID", None):  # an old file: no meta header
        implicit, little = ds.original_encoding
        ds.file_meta = ds.get("file_meta") or FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    syntax = UID(str(ds.file_meta.TransferSyntaxUID))
    if not syntax.is_transfer_syntax:
        raise ImageReadError(f"{what}: its DICOM transfer syntax is not one the standard defines")
    if not syntax.is_compressed:
        return syntax
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        decoder = None
    if decoder is None:
        raise UnsupportedImageError(f"{what} is compressed as {syntax.name}, which no DICOM decoder here reads")
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "a decoder"
        raise MissingDependencyError(f"{what} is compressed as {syntax.name}, which no installed decoder reads "
                                     f"({missing}): {DICOM}")
    return syntax


MAPPINGS = ("window", "VOI LUT", "modality LUT", "rescale slope and intercept")


def check_not_blanked(stored: np.ndarray, image: np.ndarray, steps: list[str], what: str) -> None:
    """A header whose window, LUT or rescale shows varying stored pixels as (nearly) one grey
    level (a window far outside the pixels' range, a rescale slope of 0) is an ``ImageReadError``
    naming that step: the screening's "the image is blank" would blame a file whose pixels are not."""
    mapping = [step.split(" (")[0] for step in steps if step.startswith(MAPPINGS)]
    if not mapping or int(stored.max()) == int(stored.min()):
        return
    levels = (int(image.max()) - int(image.min())) / (255 if image.dtype == np.uint8 else 65535)
    if levels < 16 / 255:  # the screening's "blank or nearly uniform": under 16 of 256 grey levels
        raise ImageReadError(f"{what}: its DICOM {mapping[-1]} shows the image as one grey level (or nearly), "
                             "although its stored pixels vary: the header's display values do not fit its pixels")


def _native_buffer(ds: Any, data: bytes) -> tuple[memoryview, str]:
    """Uncompressed pixel data without a copy, and its byte order: its bytes inside ``data`` while
    pydicom has deferred reading them (cut at the end of ``data`` where the element claims more),
    else pydicom's value."""
    from pydicom.tag import Tag

    element = ds.get_item(Tag("PixelData"), keep_deferred=True)
    order = ">" if ds.original_encoding[1] is False else "<"
    if getattr(element, "value", b"") is None:  # deferred: a RawDataElement, its value still in data
        return memoryview(data)[element.value_tell : element.value_tell + element.length], order
    return memoryview(ds.PixelData), order


def _decode(ds: Any, tags: ImageTags, what: str, data: bytes) -> np.ndarray:
    """The stored values, as the bit patterns the display table indexes; the encoded pixel data is
    dropped from ``ds`` as soon as it is decoded (a 16-bit 64 MP plate: 128 MB), before the display
    lookup allocates its output. Uncompressed little-endian pixels are a view into ``data``."""
    from pydicom.encaps import generate_frames

    if tags.syntax == RLE_LOSSLESS:  # pydicom's RLE decoder is pure Python: 24 s for 16 MP, 12 on an idle machine
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        del ds["PixelData"]
        return rle.decode(frame, tags.rows, tags.columns, tags.bits_allocated, what)
    buffer, order = _native_buffer(ds, data)
    if order == "<" and not tags.compressed:  # pydicom's pixel_array would copy it
        pixels = np.frombuffer(buffer, f"u{tags.bits_allocated // 8}", tags.rows * tags.columns)
        del ds["PixelData"]
        return pixels.reshape(tags.rows, tags.columns)
    try:
        plugin = _plugin(ds, tags)
        if plugin == "gdcm" and tags.bits_allocated == 8 and tags.bits_stored != 8:
            # GDCM aborts the whole process (a C++ assertion) on 8-bit pixels of fewer bits stored;
            # decoded as 8 of 8, the display table still keeps only the BitsStored bits
            ds.BitsStored, ds.HighBit = 8, 7
        ds.pixel_array_options(decoding_plugin=plugin)
        stored = np.asarray(ds.pixel_array)
        del ds["PixelData"]
    except MemoryError:
        raise
    except Exception as exc:  # the pixel decoders see pixels only: their message is kept
        raise ImageReadError(f"{what}: its DICOM pixel data ({tags.syntax}) cannot be decoded: {exc}") from exc
    if stored.shape != (tags.rows, tags.columns) or stored.dtype.kind not in "ui":
        raise ImageReadError(f"{what}: its DICOM pixel data decodes to {stored.shape} {stored.dtype}, not the "
                             f"{tags.rows}x{tags.columns} the header describes")
    # the lookup is indexed by the allocated bits' pattern (a decoder may answer 8 bits for 16)
    return stored.astype(f"{'i' if tags.signed else 'u'}{tags.bits_allocated // 8}", copy=False)


PLUGINS = ("pylibjpeg", "pyjpegls", "pillow", "gdcm")  # GDCM last: it aborts the process on what it dislikes


def _plugin(ds: Any, tags: ImageTags) -> str:
    """The pydicom decoder plugin for this frame: GDCM only where no other reads the syntax (JPEG
    Lossless, 12-bit JPEG); pydicom would try it first."""
    from pydicom.pixels.decoders.base import get_decoder

    available = get_decoder(ds.file_meta.TransferSyntaxUID).available_plugins
    usable = [p for p in PLUGINS if p in available and not (p == "pillow" and tags.bits_allocated > 8 and "JPEG" in tags.syntax
                                                              and "2000" not in tags.syntax)]  # Pillow's JPEG is 8-bit
    return usable[0] if usable else ""


def _domain(tags: ImageTags) -> tuple[np.ndarray, np.ndarray]:
    """The value of every bit pattern of BitsAllocated (the lookup's index) as pydicom reads it:
    the bits above BitsStored cleared, or filled with the sign bit for signed pixels; so the
    stored patterns are looked up as they are, without a pass over the image. And a mask of the
    patterns whose value counts for the display range (all of them: each is a valid value)."""
    raw = np.arange(1 << tags.bits_allocated, dtype=np.int64)
    low = raw & ((1 << tags.bits_stored) - 1)
    values = low - ((low >> (tags.bits_stored - 1)) & 1) * (1 << tags.bits_stored) if tags.signed else low
    return values, np.ones(values.shape, bool)


def display_table(ds: Any, tags: ImageTags, what: str = "the DICOM",
                  stored: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """The grey level of every stored value: modality LUT, then the VOI LUT or first window, then
    inversion; 8 bits out for 8 stored bits or fewer, 16 bits otherwise. And what was applied.
    A LUT or rescale that cannot be applied, or gives values that are not finite, is an
    ``ImageReadError`` naming the step (never its values). ``stored``: the pixels, for a file without
    a VOI (:func:`used_bits`)."""
    from pydicom.pixels.processing import apply_modality_lut, apply_voi

    values, fits = _domain(tags)
    steps: list[str] = []
    has_lut = bool(ds.get("ModalityLUTSequence"))
    modality = _applied("modality LUT" if has_lut else "rescale slope and intercept", what, fits,
                        apply_modality_lut, values, ds)
    if has_lut:
        steps.append("modality LUT")
    elif not np.array_equal(modality, values):
        steps.append("rescale slope and intercept")
    grey: np.ndarray | None = None
    if ds.get("VOILUTSequence"):
        lut = _applied("VOI LUT", what, fits, apply_voi, np.rint(modality).astype(np.int64), ds, 0)
        grey = _stretch(lut, fits)
        steps.append("VOI LUT" + _of(len(ds.VOILUTSequence)))
    else:
        window = first_window(ds)
        if window is not None:
            grey = windowed(modality, *window)
            steps.append("window" + _of(_count(ds.get("WindowCenter"))))
        elif ds.get("WindowCenter") is not None or ds.get("WindowWidth") is not None:
            steps.append("its window unusable, the whole range shown")
    if grey is None:  # no VOI: the whole range the stored bits can hold, or the bits the pixels use
        used, note = used_bits(stored, tags)
        if note:
            fits = fits & (np.arange(fits.size) <= used)  # the pixels above are outliers, shown as the top
            steps.append(note)
        grey = _stretch(modality, fits)
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    if tags.photometric == "MONOCHROME1" or shape == "INVERSE":
        # MONOCHROME1 comes with INVERSE in DX (PS3.3 C.8.11.6.1.2): one inversion, not two
        grey = 1.0 - grey
        steps.append(f"inverted ({'MONOCHROME1' if tags.photometric == 'MONOCHROME1' else 'INVERSE presentation LUT'})")
    top, dtype = (255, np.uint8) if tags.bits_stored <= 8 else (65535, np.uint16)
    return np.rint(np.clip(grey, 0.0, 1.0) * top).astype(dtype), steps


def used_bits(stored: np.ndarray | None, tags: ImageTags) -> tuple[int, str]:
    """The largest stored value a file without a VOI shows at its top, when its unsigned 16-bit pixels use
    fewer bits than Bits Stored (10 of 12: an underexposed plate, or a detector's 10 bits declared as 12),
    by the rule the other formats' 16-bit images are read by (:func:`boneage.decoded.bit_depth`: a few
    outliers, such as a burned-in marker, do not count); and the note saying so, or "" for the whole range.
    The display then does not depend on how many bits the file declares."""
    if stored is None or tags.signed or tags.bits_allocated != 16 or stored.dtype != np.uint16:
        return (1 << tags.bits_stored) - 1, ""
    from boneage.decoded import bit_depth, value_counts

    bits, over = bit_depth(value_counts(stored))
    if bits >= tags.bits_stored:
        return (1 << tags.bits_stored) - 1, ""
    top = (1 << bits) - 1
    outliers = f", {over:,} pixel{'s' if over > 1 else ''} above it shown as its top" if over else ""
    return top, f"its pixels use {bits} of the {tags.bits_stored} bits stored: 0-{top} shown{outliers}"


def _applied(name: str, what: str, fits: np.ndarray, step: Any, values: np.ndarray, *args: Any) -> np.ndarray:
    """``step(values, *args)`` (one of pydicom's LUT functions) as floats, checked: a malformed
    LUT (short data, no descriptor, 99 bits per entry) or rescale (text, several values, NaN, a
    slope of 1e308) made pydicom and numpy raise untyped errors, or gave a blank image."""
    try:
        with np.errstate(all="ignore"):
            out = np.asarray(step(values, *args), dtype=np.float64)
    except MemoryError:
        raise
    except Exception as exc:  # pydicom's messages may quote a value: its type only
        raise ImageReadError(f"{what}: its DICOM {name} cannot be applied ({type(exc).__name__}; malformed)") from exc
    if out.shape != values.shape or not np.isfinite(out[fits]).all():
        raise ImageReadError(f"{what}: applying its DICOM {name} gives values that are not finite numbers")
    return out


def _stretch(values: np.ndarray, fits: np.ndarray) -> np.ndarray:
    lo, hi = float(values[fits].min()), float(values[fits].max())
    return (values - lo) / max(hi - lo, 1e-12)


def _count(value: Any) -> int:
    return len(value) if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else 1


def _of(count: int) -> str:
    return f" (the first of {count})" if count > 1 else ""


def first_window(ds: Any) -> tuple[float, float, str] | None:
    """The first window's centre and width and its function, or None without a usable one (a
    width below 1 has no meaning: PS3.3 C.11.2.1.2)."""
    try:
        center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
        if center is None or width is None or center == "" or width == "":
            return None
        c = float(center[0] if _count(center) > 1 else center)
        w = float(width[0] if _count(width) > 1 else width)
    except (TypeError, ValueError, IndexError):
        return None
    function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    if not (np.isfinite(c) and np.isfinite(w)) or w < 1 or (function != "LINEAR" and w <= 0):
        return None
    return c, w, function


def windowed(x: np.ndarray, center: float, width: float, function: str) -> np.ndarray:
    """PS3.3 C.11.2.1.2 to [0, 1]: LINEAR (the default), LINEAR_EXACT or SIGMOID."""
    if function == "SIGMOID":
        return np.asarray(1.0 / (1.0 + np.exp(-4.0 * (x - center) / width)))
    if function == "LINEAR_EXACT":
        return np.asarray(np.clip((x - center) / width + 0.5, 0.0, 1.0))
    if width == 1:
        return np.asarray((x > center - 0.5).astype(np.float64))
    return np.asarray(np.clip((x - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0))


def _lookup(stored: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``table[stored]`` a band of rows at a time: numpy's index is 8 bytes a pixel."""
    index = stored.view(np.uint16 if stored.dtype.itemsize == 2 else np.uint8)
    out = np.empty(stored.shape, table.dtype)
    for start in range(0, stored.shape[0], ROWS_PER_PASS):
        out[start : start + ROWS_PER_PASS] = table[index[start : start + ROWS_PER_PASS]]
    return out


def _text(ds: Any, keyword: str) -> str | None:
    """A tag's value as stored, without pydicom converting (and so validating, and warning with)
    it; None where absent or unreadable."""
    from pydicom.datadict import tag_for_keyword

    try:
        element = ds.get_item(tag_for_keyword(keyword))
        value = None if element is None else element.value
    except Exception:  # noqa: BLE001 - a malformed tag is no value, never a crash
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1").strip("\0 ")
    return None if value is None else str(value)


def header_patient(ds: Any) -> HeaderPatient:
    """PatientSex, and the age from PatientBirthDate with StudyDate (else PatientAge)."""
    return HeaderPatient.from_tags(*(_text(ds, k) for k in ("PatientSex", "PatientAge", "PatientBirthDate", "StudyDate")))
