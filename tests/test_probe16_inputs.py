"""Probe 16, findings 1 and 3-5: files whose pixels depend on a tag the decoder leaves undone (associated alpha,
a 16-bit MinIsWhite TIFF as a PIL image), multi-picture JPEGs, and a figure written over its own radiograph."""

from __future__ import annotations

import importlib.util
import io
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from boneage.cli.main import main
from boneage.errors import UnsupportedImageError
from boneage.imageio import read_image
from tests.helpers import synthetic_radiograph


def with_tag(data: bytes, tag: int, value: int) -> bytes:
    """A little-endian TIFF from Pillow with the short value of ``tag`` in its first directory set to ``value``."""
    (offset,) = struct.unpack("<I", data[4:8])
    (count,) = struct.unpack("<H", data[offset : offset + 2])
    for k in range(count):
        at = offset + 2 + 12 * k
        if struct.unpack("<H", data[at : at + 2])[0] == tag:
            return data[: at + 8] + struct.pack("<H", value) + data[at + 10 :]
    raise AssertionError(f"no tag {tag}")


def tiff(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "TIFF")
    return buffer.getvalue()


# -- finding 1: associated (premultiplied) alpha ---------------------------------------------------------------------


def test_an_rgba_tiff_reads_its_colours_undarkened_by_alpha() -> None:
    """Associated alpha (ExtraSamples 1) stores the colours multiplied by alpha, and libtiff's RGBA reader multiplies
    those of unassociated alpha (2) at 8 bits: both came out darkened (82.5 months read as 114.1 at alpha 128)."""
    grey = synthetic_radiograph()
    alpha = np.full_like(grey, 128)
    stored = ((grey.astype(np.uint16) * 128 + 127) // 255).astype(np.uint8)
    associated = with_tag(tiff(Image.fromarray(np.dstack([stored, stored, stored, alpha]), "RGBA")), 338, 1)
    unassociated = tiff(Image.fromarray(np.dstack([grey, grey, grey, alpha]), "RGBA"))  # Pillow writes 2
    for data in (associated, unassociated):
        pixels = read_image(data).image
        assert pixels.shape[2] == 4 and np.abs(pixels[..., 0].astype(int) - grey).max() <= 1  # was grey / 2


def test_premultiplied_grey_and_alpha_tiff_is_refused() -> None:
    """The decoder drops the alpha of grey + alpha, so nothing is left to divide by (82.5 months became 27.2)."""
    grey = synthetic_radiograph()
    data = with_tag(tiff(Image.fromarray(np.dstack([grey // 4, np.full_like(grey, 64)]), "LA")), 338, 1)
    with pytest.raises(UnsupportedImageError, match="premultiplied"):
        read_image(data)


# -- finding 3: a 16-bit MinIsWhite TIFF given as a PIL image -------------------------------------------------------


@pytest.mark.parametrize("top", [65535, 4095])  # 16 bits, and 12 bits in a 16-bit container
def test_a_pil_image_of_a_16_bit_miniswhite_tiff_reads_as_its_file(top: int) -> None:
    grey = synthetic_radiograph().astype(np.uint16) * (top // 255)
    data = with_tag(tiff(Image.fromarray(top - grey)), 262, 0)  # stored inverted, as DICOM MONOCHROME1 exports
    from_file = read_image(data).image
    from_pil = read_image(Image.open(io.BytesIO(data))).image
    assert np.array_equal(from_pil, from_file)  # Pillow left it a negative (163.8 months for 82.5)
    assert from_pil[0, 0] < from_pil[from_pil.shape[0] * 2 // 3, from_pil.shape[1] // 2]  # dark background


# -- finding 5: multi-picture JPEGs ---------------------------------------------------------------------------------


def mpo(second: np.ndarray, kind: int | None = None) -> bytes:
    """A two-picture MPO of the radiograph and ``second``; ``kind`` sets the second's MPType in the MP index."""
    buffer = io.BytesIO()
    Image.fromarray(synthetic_radiograph()).save(buffer, "MPO", save_all=True, append_images=[Image.fromarray(second)])
    data = buffer.getvalue()
    if kind is None:
        return data
    start = data.index(b"MPF\x00") + 4  # a TIFF structure: header, one directory holding the MP entries
    endian = "<" if data[start : start + 2] == b"II" else ">"
    offset = struct.unpack(endian + "I", data[start + 4 : start + 8])[0]
    count = struct.unpack(endian + "H", data[start + offset : start + offset + 2])[0]
    for k in range(count):
        at = start + offset + 2 + 12 * k
        tag, _, _, where = struct.unpack(endian + "HHII", data[at : at + 12])
        if tag == 0xB002:
            entry = start + where + 16  # the second picture's entry: its attribute first
            (attribute,) = struct.unpack(endian + "I", data[entry : entry + 4])
            return data[:entry] + struct.pack(endian + "I", (attribute & 0xFF000000) | kind) + data[entry + 4 :]
    raise AssertionError("no MP entries")


@pytest.mark.parametrize("as_pil", [False, True])
def test_a_multi_picture_jpeg_of_another_picture_is_refused(as_pil: bool) -> None:
    data = mpo(255 - synthetic_radiograph())  # its negative: answered from the first picture, no note
    with pytest.raises(UnsupportedImageError, match=r"multi-picture JPEG \(MPO\) of 2 pictures"):
        read_image(Image.open(io.BytesIO(data)) if as_pil else data)


def test_a_multi_picture_jpeg_whose_index_does_not_read_is_refused() -> None:
    """Pillow drops a malformed MP index with a warning and reads a plain JPEG: its other pictures went unseen."""
    data = mpo(255 - synthetic_radiograph())
    at = data.index(b"MPF\x00") + 4
    endian = "<" if data[at : at + 2] == b"II" else ">"
    broken = data[:at] + data[at:].replace(struct.pack(endian + "H", 0xB002), struct.pack(endian + "H", 0xB00F), 1)
    with pytest.raises(UnsupportedImageError, match="index cannot be read"):
        read_image(broken)


@pytest.mark.parametrize("as_pil", [False, True])
def test_a_multi_picture_jpeg_with_a_preview_is_read_with_a_note(as_pil: bool) -> None:
    data = mpo(synthetic_radiograph()[::2, ::2], kind=0x010001)  # a large thumbnail (VGA)
    loaded = read_image(Image.open(io.BytesIO(data)) if as_pil else data)
    assert loaded.image.shape[:2] == synthetic_radiograph().shape
    assert any("1 reduced preview(s) of its picture (MPO), not read" in n for n in loaded.notes)


# -- finding 4: a figure written over its own radiograph ------------------------------------------------------------


PLOT = pytest.param(["predict", "hand.png", "--age", "7y", "--plot", "{out}"],
                    marks=pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                                             reason="--plot needs matplotlib (extra: plot)"))


@pytest.mark.parametrize("command", [["explain", "hand.png", "--output", "{out}"], PLOT])
@pytest.mark.parametrize("link", [False, True])
def test_force_never_writes_a_figure_over_its_input(tmp_path: Path, radiograph_png: Path, tiny_model: Path,
                                                    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                    command: list[str], link: bool) -> None:
    monkeypatch.chdir(tmp_path)
    out = "hand.png"
    if link:  # another name of the same file
        (tmp_path / "again.png").hardlink_to(radiograph_png)
        out = "again.png"
    before = radiograph_png.read_bytes()
    args = [a.format(out=out) for a in command] + ["--sex", "m", "--model", str(tiny_model), "--force"]
    assert main(args) == 2
    assert "is the input radiograph itself" in capsys.readouterr().err and radiograph_png.read_bytes() == before
