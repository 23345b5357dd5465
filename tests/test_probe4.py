"""What the fourth outside probe (issue 19) found, one test each; DICOM cases need the dicom extra
and are built at test time with pydicom."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from boneage.errors import ImageReadError
from boneage.imageio import read_image


def rle_case(pixels: np.ndarray, bits_stored: int, signed: bool) -> bytes:
    """A DICOM of ``pixels`` (their raw bit patterns kept) compressed by pydicom's own RLE encoder."""
    pytest.importorskip("pydicom", reason="the dicom extra is not installed")
    from pydicom.uid import RLELossless

    from tests.test_dicom import dataset, encoded

    ds = dataset(pixels, bits_stored=bits_stored, signed=signed)
    ds.PixelData = pixels.tobytes()
    ds.compress(RLELossless, encoding_plugin="pydicom")  # GDCM's encoder aborts the process on odd sizes
    return encoded(ds)


@pytest.mark.parametrize(("bits", "stored", "signed"), [(8, 8, False), (8, 6, True), (16, 16, False),
                                                        (16, 12, False), (16, 12, True), (16, 15, True)])
def test_rle_frames_decode_as_pydicom_decodes_them_without_its_python_decoder(
        bits: int, stored: int, signed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from pydicom import dcmread
    from pydicom.pixels.decoders import rle as pydicom_rle

    from boneage import dicom

    rng = np.random.default_rng(bits + stored)
    pixels = rng.integers(0, 2**bits, (61, 37)).astype(f"u{bits // 8}")  # garbage above BitsStored too
    pixels[10:30] = pixels[10, 0]  # runs as well as literals
    data = rle_case(pixels, stored, signed)
    expected = dcmread(io.BytesIO(data)).pixel_array  # pydicom's decoder, unused bits cleared or sign-filled
    tags = dicom.ImageTags(61, 37, bits, stored, signed, "MONOCHROME2", "RLE Lossless")

    def python_decoder(*args: Any) -> bytearray:  # 12 s for a 4000x4000 16-bit frame, ~90 s at the size limit
        raise AssertionError("pydicom's pure-Python RLE decoder was called")

    monkeypatch.setattr(pydicom_rle, "_rle_decode_segment", python_decoder)
    ds = dcmread(io.BytesIO(data))
    patterns = dicom._decode(ds, tags, "x.dcm", data)
    assert "PixelData" not in ds  # the encoded copy is dropped once decoded
    table, _ = dicom.display_table(dcmread(io.BytesIO(data)), tags)
    assert np.array_equal(dicom._lookup(patterns, table), dicom._lookup(expected, table))
    assert np.array_equal(read_image(data).image, dicom._lookup(expected, table))


def test_an_rle_segment_short_of_its_image_is_a_read_error() -> None:
    from pydicom import dcmread
    from pydicom.encaps import encapsulate, generate_frames

    from tests.test_dicom import encoded

    pixels = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    ds = dcmread(io.BytesIO(rle_case(pixels, 16, False)))
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[:-40]])
    with pytest.raises(ImageReadError, match="RLE segment decodes to fewer than the 4,096 bytes"):
        read_image(encoded(ds))


def test_onnx_runtime_writes_no_telemetry_files(tiny_model: Path, radiograph_png: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in {"ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME", "CI", "TF_BUILD", "GITHUB_ACTIONS", "GITLAB_CI"}}
    env["HOME"] = str(home)
    command = [sys.executable, "-m", "boneage.cli.main", "predict", str(radiograph_png), "--sex", "f",
               "--model", str(tiny_model), "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [p.relative_to(home) for p in home.rglob("*")] == []  # was .cache/Microsoft/DeveloperTools/.onnxruntime/
    subprocess.run([sys.executable, "-c", "import onnxruntime"], env=env, timeout=120, check=True)
    if not any(home.rglob("*")):
        pytest.skip("this ONNX Runtime writes no telemetry files even without boneage")


@pytest.mark.parametrize(("tags", "step"), [({"WindowCenter": 60000, "WindowWidth": 10}, "window"),
                                            ({"RescaleSlope": 0, "RescaleIntercept": 5}, "rescale slope and intercept")])
def test_a_header_that_blanks_varying_pixels_is_named(tags: dict[str, Any], step: str) -> None:
    pytest.importorskip("pydicom", reason="the dicom extra is not installed")
    from tests.helpers import synthetic_radiograph
    from tests.test_dicom import dataset, encoded

    pixels = synthetic_radiograph().astype(np.uint16) * 16
    with pytest.raises(ImageReadError, match=f"its DICOM {step} shows the image as one grey level .* stored pixels vary"):
        read_image(encoded(dataset(pixels, bits_stored=12, **tags)))  # was "not a hand radiograph: the image is blank"
    uniform = read_image(encoded(dataset(np.full_like(pixels, 1000), bits_stored=12, WindowCenter=60000, WindowWidth=10)))
    assert np.ptp(uniform.image) == 0  # blank pixels are the screening's to refuse, as for any format


def test_an_uncompressed_dicom_is_read_without_copying_its_values() -> None:
    pytest.importorskip("pydicom", reason="the dicom extra is not installed")
    import tracemalloc

    from pydicom import dcmread

    from boneage import dicom
    from tests.helpers import synthetic_radiograph
    from tests.test_dicom import dataset, encoded

    ds = dataset(synthetic_radiograph().astype(np.uint16) * 16, bits_stored=12)
    ds.add_new(0x00091010, "OB", b"\x01" * 20_000_000)  # a large private element: pydicom copied it
    data = encoded(ds)
    tracemalloc.start()
    try:
        loaded = read_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert loaded.image.shape == (300, 240) and peak < 10_000_000  # was 20 MB more: a 314 MB file peaked at 845 MB
    parsed = dcmread(io.BytesIO(data), defer_size=1000)  # as read_image parses pixel data over DEFER_BYTES
    tags = dicom.image_tags(parsed, "x.dcm", data)
    assert np.shares_memory(dicom._decode(parsed, tags, "x.dcm", data), np.frombuffer(data, np.uint8))


@pytest.mark.parametrize("tag", [b"\x28\x00\x10\x00", b"\x28\x00\x00\x01"])  # Rows, BitsAllocated
def test_a_header_value_of_the_wrong_length_is_a_read_error(tag: bytes) -> None:
    pytest.importorskip("pydicom", reason="the dicom extra is not installed")
    from tests.helpers import synthetic_radiograph
    from tests.test_dicom import dataset, encoded

    data = encoded(dataset(synthetic_radiograph()))
    at = data.index(tag + b"US\x02\x00")
    data = data[:at] + tag + b"US\x03\x00abc" + data[at + 10 :]  # 3 bytes for a 2-byte US
    with pytest.raises(ImageReadError, match=r"its DICOM header holds a malformed value \(BytesLengthException\)"):
        read_image(data)  # was pydicom's BytesLengthException: exit 70


@pytest.mark.parametrize("syntax", ["JPEG Lossless", "JPEG Baseline"])
def test_eight_bit_jpeg_of_fewer_bits_stored_does_not_abort_the_process(syntax: str, tmp_path: Path) -> None:
    pytest.importorskip("gdcm", reason="JPEG Lossless needs python-gdcm (the dicom extra)")
    from pydicom import dcmread

    from tests.helpers import synthetic_radiograph
    from tests.test_dicom import dataset, encoded, jpeg_baseline, jpeg_lossless

    gray = synthetic_radiograph()
    ds = (dcmread(jpeg_lossless(tmp_path, dataset(gray))) if syntax == "JPEG Lossless"
          else jpeg_baseline(dataset(gray), gray))
    ds.BitsStored, ds.HighBit = 7, 6
    path = tmp_path / "seven-bits.dcm"
    path.write_bytes(encoded(ds))
    script = ("import sys, numpy as np\nfrom boneage.imageio import read_image\n"
              "np.save(sys.argv[2], read_image(sys.argv[1]).image)")
    done = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "out.npy")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-300:]  # was -6: GDCM's C++ assertion aborted Python
    image = np.load(tmp_path / "out.npy")
    if syntax == "JPEG Lossless":  # 7 bits kept, the whole 7-bit range shown
        assert np.array_equal(image, np.rint((gray & 127) / 127 * 255).astype(np.uint8))


def test_a_pnm_header_of_a_long_comment_is_refused_before_pillow_reads_it() -> None:
    raster = bytes(range(64)) * 64
    with pytest.raises(ImageReadError, match="its PNM header runs past 64 KB"):
        read_image(b"P5\n#" + b"x" * 100_000 + b"\n64 64\n255\n" + raster)  # 5 MB took Pillow 14 s, byte by byte
    with pytest.raises(ImageReadError, match="its PNM header runs past 64 KB"):
        read_image(b"P5" + b" " * 100_000 + b"64 64\n255\n" + raster)
    image = read_image(b"P5\n# a scanner's comment\n64 64\n# another\n255\n" + raster).image
    assert image.shape == (64, 64) and np.array_equal(image[0], np.arange(64))


def test_a_jpeg_of_many_exif_segments_is_refused_and_the_first_gives_the_orientation() -> None:
    import struct

    import cv2

    from tests.helpers import synthetic_radiograph

    gray = synthetic_radiograph()
    jpeg = cv2.imencode(".jpg", gray)[1].tobytes()

    def exif(orientation: int) -> bytes:
        body = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00" + struct.pack("<HHIHH", 0x0112, 3, 1, orientation, 0) + b"\x00" * 4
        return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body

    loaded = read_image(jpeg[:2] + exif(6) + exif(3) + jpeg[2:])
    assert loaded.image.shape == gray.shape[::-1] and "EXIF orientation 6" in loaded.notes[0]
    with pytest.raises(ImageReadError, match="JPEG of 65 EXIF segments, more than the 64 allowed"):
        read_image(jpeg[:2] + exif(1) * 65 + jpeg[2:])  # Pillow joined them with quadratic copying: 300 of 64 KB, 4 s


def test_a_png_of_millions_of_chunks_is_refused_from_a_bounded_walk() -> None:
    import struct
    import zlib

    import cv2

    from tests.helpers import synthetic_radiograph

    png = cv2.imencode(".png", synthetic_radiograph())[1].tobytes()
    text = b"tEXt" + b"a\x00"
    chunk = struct.pack(">I", 2) + text + struct.pack(">I", zlib.crc32(text))
    assert read_image(png[:33] + chunk * 990 + png[33:]).image.shape == (300, 240)
    with pytest.raises(ImageReadError, match="more than 1,000 that are not image data"):
        read_image(png[:33] + chunk * 1001 + png[33:])  # 2 million: 10 s to decode, 40 s with an EXIF chunk


@pytest.mark.parametrize("data", [b"Image type: L image\r\n" + b"Name: x\r\n" * 1000,
                                  b"GIF89a\x28\x00\x28\x00\x00\x00\x00" + b"\x21\xfe\x01a\x00" * 1000 + b";",
                                  b"icns" + (8008).to_bytes(4, "big") + b"abcd\x00\x00\x00\x08" * 1000])
def test_pillow_parses_only_the_formats_boneage_reads(data: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import GifImagePlugin, IcnsImagePlugin, ImImagePlugin

    def parsed(self: object) -> None:  # a 30 MB IM header took 36 s, a GIF of comment blocks 22 s
        raise AssertionError("Pillow parsed a format boneage does not read")

    for plugin in (ImImagePlugin.ImImageFile, GifImagePlugin.GifImageFile, IcnsImagePlugin.IcnsImageFile):
        monkeypatch.setattr(plugin, "_open", parsed)
    with pytest.raises(ImageReadError, match="not a readable image"):
        read_image(data)


@pytest.mark.parametrize("filler", [b"\xff\xfe\x00\x02", b"\xff", b"\xff\xd0"])  # empty comments, fill bytes, RSTs
def test_a_jpeg_of_millions_of_markers_before_its_frame_is_refused(filler: bytes) -> None:
    import cv2

    from tests.helpers import synthetic_radiograph

    jpeg = cv2.imencode(".jpg", synthetic_radiograph())[1].tobytes()
    assert read_image(jpeg[:2] + filler * 9_000 + jpeg[2:]).image.shape == (300, 240)
    with pytest.raises(ImageReadError, match="a JPEG of more than 10,000 markers before its frame header"):
        read_image(jpeg[:2] + filler * 10_001 + jpeg[2:])  # 7.5 million comments (28 MB): 28 s in the header walk


def test_a_dicom_meta_group_of_millions_of_elements_is_refused() -> None:
    pytest.importorskip("pydicom", reason="the dicom extra is not installed")
    import struct

    from tests.helpers import synthetic_radiograph
    from tests.test_dicom import dataset, encoded

    data = encoded(dataset(synthetic_radiograph()))
    at = data.index(b"\x02\x00\x01\x00")  # the meta group's first element after its length
    empty = struct.pack("<HH2sH", 2, 0x0100, b"UI", 0)
    assert read_image(data[:at] + empty * 900 + data[at:]).image.shape == (300, 240)
    with pytest.raises(ImageReadError, match="file meta group of more than 1,000 elements"):
        read_image(data[:at] + empty * 1001 + data[at:])  # 2 million (15 MB): 44 s, uncounted


def test_a_jp2_frame_of_thousands_of_boxes_is_refused_from_a_bounded_walk() -> None:
    pytest.importorskip("pydicom", reason="the dicom extra is not installed")
    import struct

    from pydicom.encaps import encapsulate, generate_frames
    from pydicom.uid import JPEG2000Lossless

    from tests.helpers import synthetic_radiograph
    from tests.test_dicom import dataset, encoded

    ds = dataset(synthetic_radiograph())
    ds.compress(JPEG2000Lossless)
    code = next(generate_frames(ds.PixelData, number_of_frames=1))  # a codestream of the right size
    free = struct.pack(">I", 8) + b"free"  # 2 million of them (15 MB): 8 s in the box walk, then decoded
    jp2c = struct.pack(">I", 8 + len(code)) + b"jp2c" + code
    ds.PixelData = encapsulate([b"\x00\x00\x00\x0cjP  \r\n\x87\n" + free * 2_000 + jp2c])
    ds["PixelData"].VR = "OB"
    with pytest.raises(ImageReadError, match="its compressed frame .* has no readable header"):
        read_image(encoded(ds))


def test_a_file_name_too_long_is_an_input_error_and_the_batch_goes_on(
        tiny_model: Path, radiograph_png: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from boneage.cli.main import main

    long_name = "a" * 5000 + ".png"  # was OSError ENAMETOOLONG from the folder check: internal error, exit 70
    assert main(["predict", long_name, str(radiograph_png), "", "--sex", "f", "--model", str(tiny_model), "--json"]) == 2
    captured = capsys.readouterr()
    assert "cannot be read: File name too long" in captured.err and "internal error" not in captured.err
    assert sum(1 for row in json.loads(captured.out) if "bone_age_months" in row) == 1


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("json_output", [False, True])
def test_results_to_a_full_disk_on_stdout_are_an_input_error(tiny_model: Path, radiograph_png: Path,
                                                            json_output: bool) -> None:
    command = [sys.executable, "-m", "boneage.cli.main", "predict", str(radiograph_png), "--sex", "f",
               "--model", str(tiny_model), *(["--json"] if json_output else [])]
    with open("/dev/full", "w") as full:
        done = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 2, done.stderr  # was 70: "internal error: OSError: [Errno 28] No space left on device"
    assert "cannot write the results: No space left on device" in done.stderr
    assert "internal error" not in done.stderr and "Exception ignored" not in done.stderr
