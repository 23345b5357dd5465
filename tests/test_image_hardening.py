"""Inputs that an outside probe found mishandled (issue 19): EXIF orientation, decompression bombs
whatever was imported first, and files that are not regular files."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from boneage import BoneAgeEstimator
from boneage.errors import ImageReadError, ImageTooLargeError, UnsupportedImageError
from boneage.imageio import MAX_DECODED_BYTES, read_image
from tests.helpers import synthetic_radiograph
from tests.test_imageio import png_header

LOSSLESS = {"PNG": {}, "WEBP": {"lossless": True}, "TIFF": {}}


def with_orientation(upright: np.ndarray, orientation: int, fmt: str, **options: object) -> bytes:
    """The bytes a camera or viewer would write: pixels stored turned, and the tag that turns them back."""
    stored = {1: upright, 2: upright[:, ::-1], 3: upright[::-1, ::-1], 4: upright[::-1],
              5: upright.swapaxes(0, 1), 6: np.rot90(upright, 1), 7: np.rot90(upright, 2).swapaxes(0, 1),
              8: np.rot90(upright, -1)}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(stored)).save(buffer, fmt, exif=exif, **options)
    return buffer.getvalue()


def shown_by_viewers(data: bytes) -> np.ndarray:
    """What every image viewer shows: Pillow's own EXIF transpose."""
    return np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))


@pytest.mark.parametrize("fmt", sorted(LOSSLESS))
@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_honoured(fmt: str, orientation: int) -> None:
    upright = synthetic_radiograph()[:, :-13]  # not square, so a missed rotation changes the shape
    data = with_orientation(upright, orientation, fmt, **LOSSLESS[fmt])
    loaded = read_image(data)
    assert np.array_equal(loaded.image, shown_by_viewers(data))
    gray = loaded.image[..., 0] if loaded.image.ndim == 3 else loaded.image  # WebP stores gray as RGB
    assert np.array_equal(gray, upright)
    # OpenCV turns TIFFs itself, boneage the others: a note is due either way.
    applied = [n for n in loaded.notes if f"{'TIFF' if fmt == 'TIFF' else 'EXIF'} orientation {orientation} applied" in n]
    assert bool(applied) == (orientation != 1)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_rotated_jpeg_reads_as_the_upright_one(orientation: int) -> None:
    upright = synthetic_radiograph()[:, :-13]
    loaded = read_image(with_orientation(upright, orientation, "JPEG", quality=95))
    assert loaded.image.shape == upright.shape
    assert np.abs(loaded.image.astype(float) - upright).mean() < 2.0
    assert any(f"EXIF orientation {orientation}" in n for n in loaded.notes)


def test_exif_rotated_radiograph_gets_the_upright_answer(data_dir: Path, tmp_path: Path) -> None:
    """The probe's case: a real radiograph, rotated in its pixels and upright by its tag."""
    path = sorted((data_dir / "rsna-512").glob("*.png"))[0]
    upright = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    estimator = BoneAgeEstimator()
    expected = estimator.predict(upright, male=True)
    for orientation in (3, 6, 8):
        file = tmp_path / f"tagged-{orientation}.png"
        file.write_bytes(with_orientation(upright, orientation, "PNG"))
        result = estimator.predict(file, male=True)
        assert result.bone_age_months == expected.bone_age_months
        assert any("EXIF orientation" in n for n in result.notes) and not expected.notes


def tiff_header(width: int, height: int, bits: int = 8, samples: int = 1) -> bytes:
    """A little-endian TIFF whose header claims width x height but which holds almost no pixels."""
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, bits), (259, 3, 1, 1),
               (262, 3, 1, 1 if samples == 1 else 2), (273, 4, 1, 8 + 2 + 12 * 10 + 4), (277, 3, 1, samples),
               (278, 4, 1, height), (279, 4, 1, 16), (284, 3, 1, 1)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0" * 4
    return b"II*\0" + struct.pack("<I", 8) + ifd + b"\0" * 16


def test_huge_tiff_refused_from_its_header() -> None:
    with pytest.raises(ImageTooLargeError, match="900000000 pixels"):
        read_image(tiff_header(30000, 30000))
    with pytest.raises(ImageTooLargeError, match="10000x10000"):  # under Pillow's own bomb limit
        read_image(tiff_header(10000, 10000))


def test_bomb_cap_holds_when_opencv_was_imported_first(tmp_path: Path) -> None:
    """OpenCV reads its own pixel cap once, at import: a caller that imported it first used to get a
    30000x30000 TIFF decoded in full (5.4 GB)."""
    path = tmp_path / "bomb.tif"
    path.write_bytes(tiff_header(30000, 30000, bits=16, samples=3))
    code = (
        "import os, sys\n"
        "os.environ.pop('OPENCV_IO_MAX_IMAGE_PIXELS', None)\n"
        "import cv2\n"
        "from boneage.errors import ImageTooLargeError\n"
        "from boneage.imageio import load_image\n"
        "try:\n"
        f"    load_image({str(path)!r})\n"
        "except ImageTooLargeError as exc:\n"
        "    print('refused:', exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_IO_MAX_IMAGE_PIXELS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "refused:" in done.stdout and "900000000 pixels" in done.stdout


def test_working_memory_per_image_is_bounded() -> None:
    """A small file can decode to a lot: an 8000x8000 16-bit RGBA PNG is 512 MB decoded."""
    idat = struct.pack(">I", 64) + b"IDAT" + b"\0" * 64 + struct.pack(">I", zlib.crc32(b"IDAT" + b"\0" * 64))
    with pytest.raises(ImageTooLargeError, match=f"{MAX_DECODED_BYTES // 2**20} MiB"):
        read_image(png_header(8000, 8000, depth=16, colour=6) + idat)
    # The same size as 8-bit grayscale is a plausible plate and passes the header check.
    with pytest.raises(ImageReadError, match="not a readable image"):  # refused by the decoder, not the cap
        read_image(png_header(8000, 8000) + idat)


def test_formats_without_a_header_check_are_refused() -> None:
    """OpenCV decodes more formats (Radiance HDR, EXR, ...) than boneage checks before decoding."""
    ok, hdr = cv2.imencode(".hdr", np.full((64, 64, 3), 0.5, np.float32))
    assert ok and cv2.imdecode(hdr, cv2.IMREAD_UNCHANGED) is not None
    with pytest.raises((ImageReadError, UnsupportedImageError)):
        read_image(hdr.tobytes())


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_device_files_are_refused_without_reading() -> None:
    with pytest.raises(ImageReadError, match="not a regular file"):
        read_image("/dev/zero")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            read_image(fifo)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # unblock the reader so that the test process can end
        with open(fifo, "wb"):
            pass
        pytest.fail("reading a FIFO blocked")
    assert isinstance(outcome[0], ImageReadError) and "not a regular file" in str(outcome[0])


def test_one_bad_path_does_not_lose_the_batch(tiny_model: Path, tmp_path: Path, radiograph_png: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    results = BoneAgeEstimator(tiny_model).predict_many([radiograph_png, "/dev/zero", fifo, radiograph_png], [True] * 4)
    assert [type(r).__name__ for r in results] == ["Prediction", "ImageReadError", "ImageReadError", "Prediction"]


def test_a_chunk_length_past_the_end_is_refused_before_decoding() -> None:
    """One corrupted byte in a 5 KB PNG's IDAT length made OpenCV take seconds and 4 GB."""
    ok, buf = cv2.imencode(".png", synthetic_radiograph())
    png = bytearray(buf.tobytes())
    idat = png.index(b"IDAT") - 4
    png[idat] = 255
    with pytest.raises(ImageReadError, match="'IDAT' chunk runs past the end"):
        read_image(bytes(png))


def test_exif_found_anywhere_in_the_file() -> None:
    """Second probe: an Exif segment after a 64 KB comment was ignored (111 months instead of 195)."""
    upright = synthetic_radiograph()[:, :-13]
    data = with_orientation(upright, 6, "JPEG", quality=95)
    padded = data[:2] + b"\xff\xfe" + struct.pack(">H", 65535) + b"c" * 65533 + data[2:]
    assert read_image(padded).image.shape == upright.shape and read_image(padded).notes


def test_tiff_tag_bomb_is_refused_before_libtiff_reads_it() -> None:
    """2,000 tags pointing at one 1 MiB blob made libtiff read 2 GB."""
    from boneage.formats import MAX_TIFF_TAGS

    blob_at, n = 8, 2000
    blob = b"\0" * (1 << 20)
    ifd_at = blob_at + len(blob)
    entries = [(256, 4, 1, 64), (257, 4, 1, 64)] + [(40000 + i, 1, len(blob), blob_at) for i in range(n)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0" * 4
    data = b"II*\0" + struct.pack("<I", ifd_at) + blob + ifd
    with pytest.raises(ImageReadError, match=f"{n + 2} tags|MiB"):
        read_image(data)
    assert n + 2 > MAX_TIFF_TAGS
    few = [(256, 4, 1, 64), (257, 4, 1, 64)] + [(40000 + i, 1, len(blob), blob_at) for i in range(100)]
    ifd = struct.pack("<H", len(few)) + b"".join(struct.pack("<HHII", *e) for e in few) + b"\0" * 4
    with pytest.raises(ImageReadError, match="tags hold 100 MiB"):
        read_image(b"II*\0" + struct.pack("<I", ifd_at) + blob + ifd)


def test_jpeg_of_thousands_of_scans_is_refused() -> None:
    """A progressive JPEG repeating one scan took 80 s per MB to decode."""
    ok, buf = cv2.imencode(".jpg", synthetic_radiograph(), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    data = buf.tobytes()
    assert read_image(data).image.shape == synthetic_radiograph().shape  # a real progressive JPEG passes
    last = data.rindex(b"\xff\xda")
    bomb = data[:last] + data[last:-2] * 150 + data[-2:]
    with pytest.raises(ImageReadError, match="scans"):
        read_image(bomb)


def test_sixteen_bit_min_is_white_tiff_reads_as_viewers_show_it() -> None:
    from PIL import Image

    image = synthetic_radiograph().astype(np.uint16) * 200
    normal, min_is_white = io.BytesIO(), io.BytesIO()
    Image.fromarray(image).save(normal, "TIFF")
    # the same picture stored as MinIsWhite: photometric 0 and the values flipped
    Image.fromarray((65535 - image).astype(np.uint16)).save(min_is_white, "TIFF", tiffinfo={262: 0})
    assert np.array_equal(read_image(min_is_white.getvalue()).image, read_image(normal.getvalue()).image)


def test_pgm_maxval_under_255_is_scaled() -> None:
    image = (synthetic_radiograph() // 2).astype(np.uint8)  # values 0-127
    pgm = b"P5\n%d %d\n127\n" % (image.shape[1], image.shape[0]) + image.tobytes()
    loaded = read_image(pgm).image
    assert loaded.max() > image.max() and np.allclose(loaded, np.rint(image.astype(float) * 255 / 127), atol=1)


def test_transparency_and_gray_alpha_count_in_the_memory_estimate() -> None:
    from boneage.imageio import read_header

    gray_alpha = png_header(6400, 6400, depth=16, colour=4)
    idat = struct.pack(">I", 64) + b"IDAT" + b"\0" * 64 + struct.pack(">I", zlib.crc32(b"IDAT" + b"\0" * 64))
    with pytest.raises(ImageTooLargeError, match="4 channels of 16 bits"):
        read_header(gray_alpha + idat, "image")


def test_a_nul_in_a_path_is_a_typed_error() -> None:
    with pytest.raises(ImageReadError, match="not a usable path"):
        read_image("a\x00b.png")
