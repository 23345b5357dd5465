"""The eleventh probe's image findings (docs/reliability.md rows 225-233): 16-bit images read by
their bit depth, not stretched by their own minimum and maximum; bytes paths and DirEntry; several
frames; thumbnails; the format decided by content; big-endian arrays; OpenCV's log lines; a BMP whose
compressed data ends early."""

from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from boneage.errors import UnsupportedImageError
from boneage.estimator import BoneAgeEstimator
from boneage.imageio import read_image
from boneage.prediction import Prediction
from boneage.preprocess.builtin import to_uint8_gray
from tests.helpers import synthetic_radiograph


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def with_chunk(png: bytes, kind: bytes, body: bytes) -> bytes:
    """``png`` with a chunk inserted right after its IHDR."""
    return png[:33] + png_chunk(kind, body) + png[33:]


def png_bytes(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


# --- 2: 16-bit images by their bit depth ----------------------------------------------------------------


def test_a_16_bit_copy_of_an_8_bit_image_is_that_image() -> None:
    """x * 257 is the same picture: exactly the same 8-bit image, as an array and as a PNG (was: stretched
    from its own min to max, which moved the shipped model's answers by up to 25 months)."""
    gray = synthetic_radiograph()  # 0-190: the old stretch changed it
    wide = gray.astype(np.uint16) * 257
    for source in (wide, png_bytes(wide)):
        loaded = read_image(source)
        assert loaded.notes == () and np.array_equal(to_uint8_gray(loaded.image), gray)


def test_same_pixels_same_answer(tiny_model: Path) -> None:
    gray = synthetic_radiograph()
    est = BoneAgeEstimator(tiny_model)
    months = est.predict(gray, True).bone_age_months
    assert est.predict(gray.astype(np.uint16) * 257, True).bone_age_months == months
    assert est.predict(gray.astype(np.uint16), True).bone_age_months == months  # 8-bit values in 16 bits
    assert est.predict(gray / 255.0, True).bone_age_months == months


@pytest.mark.parametrize("bits", [10, 12, 14])
def test_n_bit_data_in_16_bits_is_read_as_n_bits_with_a_note(bits: int) -> None:
    gray = synthetic_radiograph()
    top = (1 << bits) - 1
    deep = np.rint(gray * (top / 255.0)).astype(np.uint16)
    deep[0, 0] = top  # its range reaches the top
    loaded = read_image(deep)
    assert loaded.notes == (f"read as a {bits}-bit image in a 16-bit container: its values lie within 0-{top}",)
    assert np.abs(to_uint8_gray(loaded.image).astype(int)[1:] - gray[1:]).max() <= 1


def test_one_bright_pixel_does_not_darken_a_12_bit_image() -> None:
    """A hot pixel or a burned-in marker at 65535 in 12-bit data is shown white, and the rest as 12 bits
    (was: the stretch put almost every pixel into grey levels 0-15)."""
    gray = synthetic_radiograph()
    twelve = gray.astype(np.uint16) * 16
    reference = to_uint8_gray(read_image(twelve).image)
    for hot in (np.s_[0, 0], np.s_[:3, :3], np.s_[10:30, 10:25]):  # 1, 9 and 300 pixels of 72,000
        marked = twelve.copy()
        marked[hot] = 65535
        loaded = read_image(marked)
        assert "12-bit" in loaded.notes[0] and "shown white" in loaded.notes[0]
        shown = to_uint8_gray(loaded.image)
        assert (shown[hot] == 255).all()
        keep = np.ones(gray.shape, bool)
        keep[hot] = False
        assert np.array_equal(shown[keep], reference[keep])


def test_png_sbit_and_pgm_maxval_declare_the_range() -> None:
    gray = synthetic_radiograph()
    twelve = gray.astype(np.uint16) * 16
    declared = with_chunk(png_bytes(twelve), b"sBIT", bytes([12]))
    assert "as the file declares" in read_image(declared).notes[0]
    # sBIT with values already scaled to 16 bits, as the PNG specification has them: read as 16 bits
    scaled = with_chunk(png_bytes(gray.astype(np.uint16) * 257), b"sBIT", bytes([8]))
    assert read_image(scaled).notes == () and np.array_equal(to_uint8_gray(read_image(scaled).image), gray)
    pgm = b"P5\n%d %d\n4095\n" % (gray.shape[1], gray.shape[0]) + twelve.astype(">u2").tobytes()
    loaded = read_image(pgm)
    assert "0-4095" in loaded.notes[0] and np.abs(to_uint8_gray(loaded.image).astype(int) - gray).max() <= 1


def test_a_12_bit_min_is_white_tiff_is_inverted_within_its_12_bits() -> None:
    from PIL import Image

    gray = synthetic_radiograph()
    buffer = io.BytesIO()
    Image.fromarray((4095 - gray.astype(np.uint16) * 16).astype(np.uint16)).save(buffer, "TIFF", tiffinfo={262: 0})
    shown = to_uint8_gray(read_image(buffer.getvalue()).image)
    assert np.abs(shown.astype(int) - gray).max() <= 1  # was: 65535 - x, nearly white, then stretched


def test_dicom_grey_levels_are_not_stretched_again() -> None:
    """A DICOM's window is what it shows: its 16-bit grey levels are read as 16 bits (/ 257), never
    stretched again (a window wider than the pixels stays as dark as the file asks)."""
    pytest.importorskip("pydicom")
    sys.path.insert(0, str(Path(__file__).parent))
    from test_dicom import dataset, encoded

    gray = synthetic_radiograph()
    ds = dataset(gray.astype(np.uint16) * 16, bits_stored=12, WindowCenter=8192, WindowWidth=16384)
    shown = to_uint8_gray(read_image(encoded(ds)).image)
    expected = np.rint(gray.astype(float) * 16 / 16384 * 255)  # the window's own grey levels, 0-47
    assert np.abs(shown.astype(int) - expected).max() <= 1


def test_a_dicom_without_a_window_is_shown_by_the_bits_its_pixels_use() -> None:
    """No window: 10-bit pixels declared as 12 bits stored are shown as 10 bits, and one pixel at 4095 does
    not darken the rest (was: whatever the stretch made of the pixels' own min and max)."""
    pytest.importorskip("pydicom")
    sys.path.insert(0, str(Path(__file__).parent))
    from test_dicom import dataset, encoded

    gray = synthetic_radiograph()
    ten = np.rint(gray * (1023 / 255)).astype(np.uint16)
    plain = read_image(encoded(dataset(ten, bits_stored=12)))
    hot = ten.copy()
    hot[0, 0] = 4095
    marked = read_image(encoded(dataset(hot, bits_stored=12)))
    assert "its pixels use 10 of the 12 bits stored" in plain.notes[0] and "1 pixel above it" in marked.notes[0]
    assert np.abs(to_uint8_gray(plain.image).astype(int) - gray).max() <= 1
    assert np.array_equal(to_uint8_gray(marked.image)[1:], to_uint8_gray(plain.image)[1:])


# --- 4: paths that are bytes, DirEntry, and objects whose __fspath__ is no path -------------------------


class NoPath:
    def __fspath__(self) -> object:
        return 5


def test_bytes_paths_and_dir_entries_are_read_and_named(tiny_model: Path, radiograph_png: Path) -> None:
    """Was: a bytes DirEntry raised an untyped TypeError that lost the whole batch; a DirEntry's source
    was "<DirEntry 'x.png'>"."""
    folder = radiograph_png.parent
    as_bytes = next(e for e in os.scandir(os.fsencode(folder)) if e.name == b"hand.png")
    as_text = next(e for e in os.scandir(folder) if e.name == "hand.png")
    est = BoneAgeEstimator(tiny_model)
    results = est.predict_many([radiograph_png, as_bytes, NoPath(), as_text], [True] * 4)
    assert isinstance(results[0], Prediction) and isinstance(results[1], Prediction)
    assert isinstance(results[2], UnsupportedImageError) and "__fspath__" in str(results[2])
    assert isinstance(results[3], Prediction)
    assert results[1].source == results[3].source == str(radiograph_png)
    assert results[1].bone_age_months == results[0].bone_age_months


# --- 5: several frames ------------------------------------------------------------------------------------


def tiff(pages: list[tuple[np.ndarray, int]]) -> bytes:
    """A classic little-endian TIFF of 8-bit grayscale pages, each with its NewSubfileType."""
    out = bytearray(b"II*\0" + struct.pack("<I", 0))
    link = 4  # where the offset of the next directory goes
    for image, subfile in pages:
        strip = len(out)
        out += image.tobytes()
        if len(out) % 2:
            out += b"\0"
        directory = len(out)
        struct.pack_into("<I", out, link, directory)
        h, w = image.shape
        tags = [(254, 4, subfile), (256, 4, w), (257, 4, h), (258, 3, 8), (259, 3, 1), (262, 3, 1),
                (273, 4, strip), (277, 3, 1), (278, 4, h), (279, 4, image.size)]
        out += struct.pack("<H", len(tags))
        for tag, kind, value in tags:
            out += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
        link = len(out)
        out += struct.pack("<I", 0)
    return bytes(out)


def test_several_pictures_in_one_file_are_refused_as_a_multi_frame_dicom_is() -> None:
    from PIL import Image

    gray = synthetic_radiograph()
    blank = np.zeros_like(gray)
    with pytest.raises(UnsupportedImageError, match="TIFF of more than one page"):
        read_image(tiff([(blank, 0), (gray, 0)]))
    frames = [Image.fromarray(np.ascontiguousarray(f)) for f in (blank + 9, gray)]
    animated = io.BytesIO()
    frames[0].save(animated, "PNG", save_all=True, append_images=frames[1:])
    with pytest.raises(UnsupportedImageError, match="animated PNG of 2 frames"):
        read_image(animated.getvalue())
    webp = io.BytesIO()
    frames[0].save(webp, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    with pytest.raises(UnsupportedImageError, match="animated WebP"):
        read_image(webp.getvalue())


def test_a_tiff_with_a_reduced_resolution_copy_is_read_from_its_first_page_with_a_note() -> None:
    gray = synthetic_radiograph()
    loaded = read_image(tiff([(gray, 0), (np.ascontiguousarray(gray[::4, ::4]), 1)]))
    assert np.array_equal(loaded.image, gray)
    assert loaded.notes == ("page 1 of 2 read: the file marks the others as reduced-resolution copies or masks",)
    assert read_image(tiff([(gray, 0)])).notes == ()


# --- 11: thumbnails ----------------------------------------------------------------------------------------


def test_a_thumbnail_smaller_than_the_model_input_is_warned(tiny_model: Path) -> None:
    from boneage.estimator import size_warnings

    est = BoneAgeEstimator(tiny_model, check_input=False)  # a 64-px model: warned under 51 px a side
    gray = synthetic_radiograph()
    small = cv2.resize(gray, (40, 50), interpolation=cv2.INTER_AREA)
    assert any("40x50 pixels" in w for w in est.predict(small, True).warnings)
    assert not any("pixels: under" in w for w in est.predict(gray, True).warnings)
    assert size_warnings(np.zeros((79, 300)), 100) and not size_warnings(np.zeros((80, 80)), 100)


# --- 12: the content decides the format, not the name -------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".bmp"])
def test_an_image_named_dcm_is_read_as_the_image_it_is(tmp_path: Path, suffix: str) -> None:
    gray = synthetic_radiograph()
    ok, data = cv2.imencode(suffix, gray)
    path = tmp_path / "scan.dcm"
    path.write_bytes(data.tobytes())
    assert read_image(path).image.shape[:2] == gray.shape  # was: "not a DICOM file (no DICM marker ...)"


# --- 14: big-endian arrays, OpenCV's log lines, a BMP that ends early ---------------------------------------


def test_big_endian_arrays_are_read() -> None:
    """A ">u2" array (FITS, pydicom's big-endian data) is its native twin (was: "has dtype >u2; expected
    uint8, uint16 or float"); big-endian floats were read already."""
    gray = synthetic_radiograph()
    big = np.frombuffer((gray.astype(np.uint16) * 257).astype(">u2").tobytes(), ">u2").reshape(gray.shape)
    loaded = read_image(big)
    assert loaded.image.dtype == np.uint16 and loaded.image.dtype.isnative
    assert np.array_equal(to_uint8_gray(loaded.image), gray)


def damaged_files() -> list[bytes]:
    from PIL import Image

    gray = synthetic_radiograph()
    lzw = io.BytesIO()
    Image.fromarray(gray).save(lzw, "TIFF", compression="tiff_lzw")
    tif = bytearray(lzw.getvalue())
    tif[len(tif) // 2 : len(tif) // 2 + 400] = b"\xff" * 400
    bmp = cv2.imencode(".bmp", gray)[1].tobytes()
    return [bytes(tif), bmp[: len(bmp) // 2]]


def test_opencv_log_lines_do_not_reach_the_caller(capfd: pytest.CaptureFixture[str]) -> None:
    logging = cv2.utils.logging
    before = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_WARNING)
    try:
        for data in damaged_files():
            try:
                read_image(data)
            except UnsupportedImageError:
                pass
            except Exception as exc:  # noqa: BLE001 - only the log lines are at issue here
                assert type(exc).__name__ == "ImageReadError"
        assert logging.getLogLevel() == logging.LOG_LEVEL_WARNING  # the caller's level restored
    finally:
        logging.setLogLevel(before)
    assert "[ERROR" not in capfd.readouterr().err and "WARN" not in capfd.readouterr().err


def rle8_bmp(image: np.ndarray, rows: int | None = None) -> bytes:
    """An 8-bit grayscale BMP compressed with RLE8 whose data holds its bottom ``rows`` rows, then ends."""
    h, w = image.shape
    data = bytearray()
    for row in image[::-1][: h if rows is None else rows]:  # bottom-up
        x = 0
        while x < w:
            run = 1
            while x + run < w and run < 255 and row[x + run] == row[x]:
                run += 1
            data += bytes([run, int(row[x])])
            x += run
        data += b"\0\0"
    data += b"\0\1"
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    offset = 14 + 40 + len(palette)
    header = b"BM" + struct.pack("<IHHI", offset + len(data), 0, 0, offset)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 8, 1, len(data), 2835, 2835, 256, 0)
    return header + info + palette + bytes(data)


def test_an_rle_bmp_that_ends_early_is_warned(tiny_model: Path) -> None:
    gray = synthetic_radiograph()
    whole = read_image(rle8_bmp(gray))
    assert np.array_equal(whole.image, gray) and whole.warnings == ()
    half = rle8_bmp(gray, rows=150)
    loaded = read_image(half)
    assert loaded.warnings == ("the BMP's compressed data ends after 150 of its 300 rows: the other 150 are "
                               "shown black (a file cut short?)",)
    prediction = BoneAgeEstimator(tiny_model, check_input=False).predict(half, True)
    assert loaded.warnings[0] in prediction.warnings


def test_full_range_leaves_other_images_alone() -> None:
    from boneage.decoded import full_range

    gray = synthetic_radiograph()
    assert full_range(gray)[0] is gray and full_range(gray / 255.0)[1] == ()
