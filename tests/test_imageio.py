"""Every way an image can be wrong gets a typed error; every way it can be right loads."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from boneage.errors import ImageReadError, ImageTooLargeError, ImageTooSmallError, UnsupportedImageError
from boneage.imageio import load_image, own_header, read_image
from tests.helpers import synthetic_radiograph, write_png


def png_header(width: int, height: int, depth: int = 8, colour: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


def encoded(ext: str, image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file"):
        load_image(tmp_path / "nope.png")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="directory"):
        load_image(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        load_image(tmp_path / "empty.png")


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated(tmp_path: Path, ext: str) -> None:
    data = encoded(ext, synthetic_radiograph())
    with pytest.raises(ImageReadError):
        load_image(data[: len(data) // 3])


def test_not_an_image() -> None:
    with pytest.raises(ImageReadError, match="not a readable image"):
        load_image(b"%PDF-1.4 this is not a radiograph" * 10)


@pytest.mark.parametrize("side", [1, 16])
def test_too_small(side: int) -> None:
    with pytest.raises(ImageTooSmallError):
        load_image(encoded(".png", np.zeros((side, side), np.uint8)))
    with pytest.raises(ImageTooSmallError):
        load_image(np.zeros((side, side), np.uint8))


def test_huge_header_refused_before_decoding() -> None:
    data = png_header(60000, 60000) + b"\x00" * 100
    assert (own_header(data).width, own_header(data).height) == (60000, 60000)  # type: ignore[union-attr]
    with pytest.raises(ImageTooLargeError, match="60000x60000"):
        load_image(data)


def test_jpeg_header_size() -> None:
    header = own_header(encoded(".jpg", np.zeros((120, 90), np.uint8)))
    assert header is not None and (header.width, header.height, header.channels) == (90, 120, 1)


def test_16_bit_png(tmp_path: Path) -> None:
    """12-bit data in a 16-bit container is read as 12 bits: scaled to the 16-bit range, and said."""
    image = (synthetic_radiograph().astype(np.uint16) * 16)  # 12-bit data in 16-bit container
    loaded = read_image(write_png(tmp_path / "deep.png", image))
    assert loaded.image.dtype == np.uint16
    assert np.abs(loaded.image - image * (65535 / 4095)).max() <= 1
    assert loaded.notes == ("read as a 12-bit image in a 16-bit container: its values lie within 0-4095",)


def test_rgb_and_rgba_files(tmp_path: Path) -> None:
    gray = synthetic_radiograph()
    rgb = load_image(write_png(tmp_path / "rgb.png", cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)))
    rgba = load_image(write_png(tmp_path / "rgba.png", cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA)))
    assert rgb.shape == (*gray.shape, 3) and rgba.shape == (*gray.shape, 4)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -0.5, 1.5])
def test_bad_float_values(bad: float) -> None:
    image = np.full((64, 64), 0.5, np.float32)
    image[3, 3] = bad
    with pytest.raises(UnsupportedImageError):
        load_image(image)


@pytest.mark.parametrize(
    "array",
    [np.zeros((64,), np.uint8), np.zeros((2, 64, 64, 1), np.uint8), np.zeros((64, 64, 2), np.uint8),
     np.zeros((64, 64), np.int32), np.zeros((64, 64), bool), np.zeros((64, 64), np.complex64)],
    ids=["1d", "4d", "2-channel", "int32", "bool", "complex"],
)
def test_wrong_shapes_and_dtypes(array: np.ndarray) -> None:
    with pytest.raises(UnsupportedImageError):
        load_image(array)


def test_unsupported_source_type() -> None:
    with pytest.raises(UnsupportedImageError):
        load_image(12345)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["with space.png", "röntgen_手.png"])
def test_unusual_paths(tmp_path: Path, name: str) -> None:
    image = synthetic_radiograph()
    path = tmp_path / name
    path.write_bytes(encoded(".png", image))
    assert np.array_equal(load_image(str(path)), image)


def test_bytes_and_array_agree(tmp_path: Path) -> None:
    image = synthetic_radiograph()
    assert np.array_equal(load_image(encoded(".png", image)), load_image(image))
