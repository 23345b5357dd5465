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
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from boneage.errors import ImageReadError, ImageTooLargeError, MissingDependencyError, UnsupportedImageError
from boneage.extras import DICOM, require
from boneage.imageio import MAX_DECODED_BYTES, Loaded, check_array, check_size
from boneage.patient import HeaderPatient

MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
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


def read_dicom(data: bytes, what: str) -> Loaded:
    """A checked grayscale image, what was done to it, and the sex and age its header holds."""
    require("pydicom", DICOM, f"{what} is DICOM: reading it")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's value warnings may quote a patient's tag
        ds = _parse(data, what)
        tags = image_tags(ds, what)
        stored = _decode(ds, tags, what)
        del ds["PixelData"]  # the encoded copy, before the output is allocated (a 16-bit 64 MP plate: 128 MB)
        table, steps = display_table(ds, tags)
        patient = header_patient(ds)
    image = _lookup(stored, table)
    note = f"read as DICOM ({tags.syntax}, {tags.bits_stored} of {tags.bits_allocated} bits{''.join(', ' + s for s in steps)})"
    return Loaded(check_array(image, what), (note,), patient=patient)


def _parse(data: bytes, what: str) -> Any:
    from pydicom import dcmread

    try:
        ds = dcmread(io.BytesIO(data), force=not is_dicom(data))
    except MemoryError:
        raise
    except Exception as exc:  # pydicom's messages may quote a value: its type only
        raise ImageReadError(f"{what} is not a readable DICOM file ({type(exc).__name__}; truncated or corrupted)") from exc
    if not is_dicom(data) and "SOPClassUID" not in ds and "Rows" not in ds:
        raise ImageReadError(f"{what} is not a DICOM file (no DICM marker and no DICOM image elements)")
    return ds


def _int(ds: Any, keyword: str, what: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    if value is None or value == "":
        raise ImageReadError(f"{what}: its DICOM header lacks {keyword}, which an image needs")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ImageReadError(f"{what}: its DICOM {keyword} is not a whole number") from exc


def image_tags(ds: Any, what: str) -> ImageTags:
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
        raise UnsupportedImageError(f"{what} is a colour DICOM ({photometric or 'no PhotometricInterpretation'}, "
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
    tags = ImageTags(rows, columns, bits, stored, representation == 1, photometric, syntax.name)
    if not syntax.is_compressed:
        expected, held = rows * columns * bits // 8, len(ds.PixelData)
        if held < expected:
            raise ImageReadError(f"{what} is truncated: its pixel data holds {held:,} of the {expected:,} bytes its "
                                 "header describes")
    return tags


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


def _decode(ds: Any, tags: ImageTags, what: str) -> np.ndarray:
    try:
        stored = np.asarray(ds.pixel_array)
    except MemoryError:
        raise
    except Exception as exc:  # the pixel decoders see pixels only: their message is kept
        raise ImageReadError(f"{what}: its DICOM pixel data ({tags.syntax}) cannot be decoded: {exc}") from exc
    if stored.shape != (tags.rows, tags.columns) or stored.dtype.kind not in "ui":
        raise ImageReadError(f"{what}: its DICOM pixel data decodes to {stored.shape} {stored.dtype}, not the "
                             f"{tags.rows}x{tags.columns} the header describes")
    # the lookup is indexed by the allocated bits' pattern (a decoder may answer 8 bits for 16)
    return stored.astype(f"{'i' if tags.signed else 'u'}{tags.bits_allocated // 8}", copy=False)


def _domain(tags: ImageTags) -> tuple[np.ndarray, np.ndarray]:
    """Every value the pixel data can hold, in the order of its unsigned bit pattern (the lookup's
    index), and a mask of those that fit in BitsStored."""
    raw = np.arange(1 << tags.bits_allocated, dtype=np.uint16 if tags.bits_allocated == 16 else np.uint8)
    values: np.ndarray = (raw.view(np.int16 if tags.bits_allocated == 16 else np.int8) if tags.signed else raw).astype(np.int64)
    if tags.signed:
        fits = (values >= -(1 << (tags.bits_stored - 1))) & (values < (1 << (tags.bits_stored - 1)))
    else:
        fits = values < (1 << tags.bits_stored)
    return values, fits


def display_table(ds: Any, tags: ImageTags) -> tuple[np.ndarray, list[str]]:
    """The grey level of every stored value: modality LUT, then the VOI LUT or first window, then
    inversion; 8 bits out for 8 stored bits or fewer, 16 bits otherwise. And what was applied."""
    from pydicom.pixels.processing import apply_modality_lut, apply_voi

    values, fits = _domain(tags)
    steps: list[str] = []
    modality = np.asarray(apply_modality_lut(values, ds), dtype=np.float64)
    if ds.get("ModalityLUTSequence"):
        steps.append("modality LUT")
    elif float(ds.get("RescaleSlope", 1) or 1) != 1 or float(ds.get("RescaleIntercept", 0) or 0) != 0:
        steps.append("rescale slope and intercept")
    grey: np.ndarray | None = None
    if ds.get("VOILUTSequence"):
        lut = np.asarray(apply_voi(np.rint(modality).astype(np.int64), ds, 0), dtype=np.float64)
        grey = _stretch(lut, fits)
        steps.append("VOI LUT" + _of(len(ds.VOILUTSequence)))
    else:
        window = first_window(ds)
        if window is not None:
            grey = windowed(modality, *window)
            steps.append("window" + _of(_count(ds.get("WindowCenter"))))
        elif ds.get("WindowCenter") is not None or ds.get("WindowWidth") is not None:
            steps.append("its window unusable, the whole range shown")
    if grey is None:
        grey = _stretch(modality, fits)  # no VOI: the whole range the stored bits can hold
    shape = str(ds.get("PresentationLUTShape", "") or "").strip().upper()
    if tags.photometric == "MONOCHROME1" or shape == "INVERSE":
        # MONOCHROME1 comes with INVERSE in DX (PS3.3 C.8.11.6.1.2): one inversion, not two
        grey = 1.0 - grey
        steps.append(f"inverted ({'MONOCHROME1' if tags.photometric == 'MONOCHROME1' else 'INVERSE presentation LUT'})")
    top, dtype = (255, np.uint8) if tags.bits_stored <= 8 else (65535, np.uint16)
    return np.rint(np.clip(grey, 0.0, 1.0) * top).astype(dtype), steps


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
