"""What was left after the second probe (issue 19): memory that grew with a crafted input, and a
model card that could choose a file to open; and what the third probe found in crafted DICOM files.
One test each."""

from __future__ import annotations

import csv
import json
import shutil
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from boneage import onnxwire
from boneage.cli.main import main
from boneage.errors import ImageReadError, ImageTooLargeError
from boneage.imageio import read_image
from boneage.modelcard import ModelCard
from boneage.onnxwire import WireError, external_tensors
from boneage.preprocess.builtin import to_uint8_gray
from tests.helpers import tiny_card


def length_delimited(number: int, payload: bytes) -> bytes:
    key, size, length = bytes([number << 3 | 2]), bytearray(), len(payload)
    while True:
        size.append((length & 0x7F) | (0x80 if length >> 7 else 0))
        length >>= 7
        if not length:
            return key + bytes(size) + payload


def peak_bytes(fn: object, *args: object) -> int:
    tracemalloc.start()
    try:
        fn(*args)  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_model_of_many_empty_nodes_is_scanned_in_constant_memory() -> None:
    model = length_delimited(7, b"\x0a\x00" * 200_000)  # a graph of 200,000 empty nodes: 400 KB
    assert peak_bytes(external_tensors, model) < 1_000_000  # was 26 MB: one pending span per node


def test_messages_nested_deeper_than_protobuf_parses_are_refused() -> None:
    inner = b""
    for _ in range(200):  # node -> attribute -> subgraph -> node ...
        inner = length_delimited(1, length_delimited(5, length_delimited(6, inner)))
    with pytest.raises(WireError, match="nested more than"):
        external_tensors(length_delimited(7, inner))


def test_the_field_count_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnxwire, "MAX_FIELDS", 1000)
    external_tensors(length_delimited(7, b"\x0a\x00" * 900))
    with pytest.raises(WireError, match="more than 1,000 protobuf fields"):
        external_tensors(length_delimited(7, b"\x0a\x00" * 1100))


def test_sixteen_bit_to_eight_bit_makes_no_float_copy() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(1000, 50_000, (1000, 1000)).astype(np.uint16)
    expected = np.rint(image.astype(np.float64) / 257).astype(np.uint8)  # 16 bits, never stretched (probe 11)
    assert np.abs(to_uint8_gray(image).astype(int) - expected).max() <= 1
    assert peak_bytes(to_uint8_gray, image) < image.nbytes  # three 4 MB float copies before


@pytest.mark.parametrize("options", [{"model_path": "/etc/passwd"}, {"fallback": {}, "model_path": "../x.task"}])
def test_a_card_cannot_name_a_file_to_open(options: dict[str, object]) -> None:
    steps = [{"name": "hand_crop", "params": {"cropper": "mediapipe", "options": options}},
             *tiny_card().model_dump(mode="json")["preprocessing"]["steps"]]
    with pytest.raises(ValueError, match=r"names files to read \(hand_crop.options.model_path\)"):
        ModelCard.model_validate({**tiny_card().model_dump(mode="json"), "preprocessing": {"steps": steps}})


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_resume_tries_again_what_failed(tiny_model: Path, radiograph_png: Path, tmp_path: Path, suffix: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    if suffix == ".parquet":
        pytest.importorskip("pyarrow", reason="Parquet output needs the parquet extra")
    late = tmp_path / "late.png"  # missing on the first run, there on the second
    results = tmp_path / f"results{suffix}"
    command = ["predict", str(radiograph_png), str(late), "--sex", "f", "--model", str(tiny_model),
               "--output", str(results)]
    assert main(command) == 2
    shutil.copy(radiograph_png, late)
    assert main([*command, "--resume"]) == 0
    rows = read_rows(results)
    assert [(Path(str(r["source"])).name, bool(r.get("error_type") or r.get("error"))) for r in rows] == [
        (radiograph_png.name, False), ("late.png", True), ("late.png", False)]
    capsys.readouterr()


def read_rows(path: Path) -> list[dict[str, object]]:
    if path.suffix == ".csv":
        return list(csv.DictReader(path.open()))
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    import pyarrow.parquet as pq

    return list(pq.read_table(path).to_pylist())


def test_csv_list_columns_match_whatever_their_case(tiny_model: Path, radiograph_png: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text(f" Path ,SEX,Age\n{radiograph_png.name},F,10y\n")
    assert main(["predict", "--csv", str(listing), "--model", str(tiny_model), "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["male"] is False and row["comparison"]["chronological_age_months"] == 120


# --- third probe: crafted DICOM headers (pydicom builds them at test time) ---------------------------


def dicom_case(**tags: Any) -> Any:
    pytest.importorskip("pydicom", reason="the dicom extra is not installed")
    from tests.helpers import synthetic_radiograph
    from tests.test_dicom import dataset

    return dataset(synthetic_radiograph().astype(np.uint16) * 200, **tags)


def dicom_bytes(ds: Any, replace: tuple[bytes, bytes] = (b"", b"")) -> bytes:
    from tests.test_dicom import encoded

    return encoded(ds).replace(*replace) if replace[0] else encoded(ds)


def lut_item(descriptor: list[int] | None, data: bytes | None) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    if descriptor is not None:
        item.add_new(0x00283002, "US", descriptor)
    if data is not None:
        item.add_new(0x00283006, "OW", data)
    return item


@pytest.mark.parametrize("case", ["slope text", "two slopes", "slope nan", "slope 1e308", "modality LUT short",
                                  "modality LUT of 99 bits", "VOI LUT without descriptor", "VOI LUT without data"])
def test_a_malformed_dicom_lut_or_rescale_is_a_read_error(case: str, tiny_model: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from pydicom.sequence import Sequence

    replace = (b"", b"")
    if case in ("slope text", "slope nan"):  # pydicom will not write a DS it cannot read: patched in the bytes
        ds, replace = dicom_case(RescaleSlope="1.2345", RescaleIntercept="0"), (b"1.2345", case[-3:].encode() + b"   ")
    elif case == "two slopes":
        ds = dicom_case(RescaleSlope=[1, 2], RescaleIntercept=0)
    elif case == "slope 1e308":
        ds = dicom_case(RescaleSlope="1e308", RescaleIntercept="0")
    else:
        ds = dicom_case()
        item = {"modality LUT short": lut_item([4096, 0, 16], b"\x01\x00" * 10),
                "modality LUT of 99 bits": lut_item([256, 0, 99], b"\x00\x01" * 256),
                "VOI LUT without descriptor": lut_item(None, b"\x00\x01" * 256),
                "VOI LUT without data": lut_item([256, 0, 16], None)}[case]
        setattr(ds, "ModalityLUTSequence" if case.startswith("modality") else "VOILUTSequence", Sequence([item]))
    data = dicom_bytes(ds, replace)
    with pytest.raises(ImageReadError, match="its DICOM (rescale|modality LUT|VOI LUT)"):  # was TypeError, KeyError,
        read_image(data)  # struct.error, UFuncTypeError... (exit 70), or a blank image for NaN and 1e308
    path = tmp_path / "x.dcm"
    path.write_bytes(data)
    assert main(["predict", str(path), "--sex", "m", "--model", str(tiny_model)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_jp2_box_of_length_zero_does_not_hang() -> None:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    ds = dicom_case()
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 500])  # then a box of length 0
    ds["PixelData"].VR = "OB"
    data, outcome = dicom_bytes(ds), []
    worker = threading.Thread(target=lambda: outcome.append(raised(read_image, data)), daemon=True)
    worker.start()
    worker.join(20)
    assert outcome and isinstance(outcome[0], ImageReadError)  # pydicom looped forever on a 1 KB file


def raised(fn: Any, *args: object) -> BaseException | None:
    try:
        fn(*args)
    except BaseException as exc:  # noqa: BLE001 - the test looks at it
        return exc
    return None


def test_a_compressed_frame_is_checked_against_the_dicom_header_before_decoding() -> None:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    from tests.test_dicom import jpeg_bytes

    ds = dicom_case()
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    big = np.zeros((6000, 6000), np.uint8)
    big[::7] = 200
    ds.PixelData = encapsulate([jpeg_bytes(big, 50)])  # 6000x6000 in a 240x300 DICOM: was decoded whole (36 MB)
    ds["PixelData"].VR = "OB"
    with pytest.raises(ImageReadError, match="frame is 6000x6000 .* not the 240x300"):
        read_image(dicom_bytes(ds))


def test_an_rle_segment_that_decodes_past_its_size_is_decoded_no_further() -> None:
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    ds = dicom_case()
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.file_meta.TransferSyntaxUID = RLELossless
    header = np.array([1, 64] + [0] * 14, "<u4").tobytes()
    ds.PixelData = encapsulate([header + b"\x81\x07" * 500_000])  # 1 MB of runs: 64 MB decoded (was read)
    ds["PixelData"].VR = "OB"
    data = dicom_bytes(ds)
    assert peak_bytes(read_image, data) < 8 * len(data)  # the runs past 240x300 are never decoded (fourth probe)
    assert (read_image(data).image == 7).all()  # the first 72,000 bytes: all 7, shown on the 8-bit range


def test_a_deflated_dicom_is_inflated_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    from boneage import dicom

    monkeypatch.setattr(dicom, "MAX_INFLATED_BYTES", 2**20)  # 224 MiB: a 1.5 MB file inflated to 1.5 GB before
    ds = dicom_case()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    assert read_image(dicom_bytes(ds)).image.shape == (300, 240)  # 144 KB inflated: read
    ds.add_new(0x00091010, "OB", b"\x00" * 2 * 2**20)
    with pytest.raises(ImageTooLargeError, match="deflated DICOM that inflates to more than"):
        read_image(dicom_bytes(ds))


# --- third probe: lists and labels that hold patient data ------------------------------------------


def test_a_csv_list_without_its_header_line_is_not_echoed(tiny_model: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text("hand.png,m,Doe^Jane,2008-03-15,MRN-4417\nfoot.png,f,Roe^Ann,2009-01-02,MRN-5\n")  # no header
    assert main(["predict", "--csv", str(listing), "--model", str(tiny_model)]) == 2
    err = capsys.readouterr().err
    assert "no path and sex column" in err  # was "needs the columns path,sex (found: hand.png, m, doe^jane, ...)"
    assert not any(s in err.lower() for s in ("doe", "2008", "mrn"))


@pytest.mark.parametrize("row", ["1,Doe^Jane 2008-03-15,true", "1,100,Doe^Jane", "1,nan,true", "1,-1e308,true",
                                 "1,1e308,true"])
def test_labels_are_checked_and_their_values_never_echoed(tmp_path: Path, row: str) -> None:
    from boneage.errors import ConfigError
    from boneage.training.config import DataSource
    from boneage.training.data import read_source

    (tmp_path / "labels.csv").write_text(f"id,boneage,male\n{row}\n")
    (tmp_path / "1.png").write_bytes(b"")
    with pytest.raises(ConfigError, match="labels.csv:2") as caught:  # NaN gave NaN metrics (exit 0), -1e308 exit 70
        read_source(DataSource(labels=tmp_path / "labels.csv", images=tmp_path))
    assert "Doe" not in str(caught.value) and "2008" not in str(caught.value)


def test_labels_in_utf16_are_a_config_error(tmp_path: Path) -> None:
    from boneage.errors import ConfigError
    from boneage.training.config import DataSource
    from boneage.training.data import read_source

    (tmp_path / "labels.csv").write_text("id,boneage,male\n1,100,true\n", encoding="utf-16")  # was exit 70
    with pytest.raises(ConfigError, match="not a UTF-8 CSV"):
        read_source(DataSource(labels=tmp_path / "labels.csv", images=tmp_path))


def test_a_frame_split_into_too_many_fragments_is_refused_before_joining() -> None:
    import struct

    from pydicom.uid import JPEGBaseline8Bit

    from tests.test_dicom import jpeg_bytes

    ds = dicom_case()
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit

    def item(data: bytes) -> bytes:
        return struct.pack("<HHI", 0xFFFE, 0xE000, len(data)) + data

    # 70,000 empty-ish fragments (700 KB) after a real frame: read before (1M of them: 5 s, 190 MB per 10 MB file)
    ds.PixelData = item(b"") + item(jpeg_bytes(np.full((300, 240), 99, np.uint8))) + item(b"\x00\x00") * 70_000 \
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    ds["PixelData"].VR = "OB"
    with pytest.raises(ImageReadError, match="more than 65,536 fragments"):
        read_image(dicom_bytes(ds))


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"])  # explicit VR, deflated
def test_a_dicom_of_too_many_elements_is_refused_before_pydicom_parses_them(syntax: str) -> None:
    import struct

    from pydicom.uid import UID

    ds = dicom_case()
    ds.file_meta.TransferSyntaxUID = UID(syntax)
    ds.add_new(0x00091010, "OB", b"PLACEHOLDER!")
    placeholder = struct.pack("<HHH2xI", 0x0009, 0x1010, 0x424F, 12) + b"PLACEHOLDER!"  # tag, "OB", length
    empty = struct.pack("<HH", 0x0009, 0x1011) + b"LO" + struct.pack("<H", 0)
    if syntax.endswith(".99"):  # the elements go into the deflated stream: built uncompressed, then deflated
        import zlib

        from boneage.dicom import meta_syntax

        deflated = dicom_bytes(ds)
        meta = deflated[: meta_syntax(deflated)[1]]
        ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.1")
        plain = dicom_bytes(ds, (placeholder, empty * 120_000))
        squeeze = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = meta + squeeze.compress(plain[meta_syntax(plain)[1] :]) + squeeze.flush()
    else:
        data = dicom_bytes(ds, (placeholder, empty * 120_000))  # 960 KB; 2 million of them (16 MB) took 42 s
    with pytest.raises(ImageReadError, match="more than 100,000 elements"):
        read_image(data)


# --- third probe: thread counts ---------------------------------------------------------------------


@pytest.mark.parametrize("threads", [100_000, -1, 2.5, "4", True])
def test_threads_given_to_the_library_are_bounded_and_typed(tiny_model: Path, threads: object) -> None:
    from boneage import BoneAgeEstimator
    from boneage.errors import ConfigError

    with pytest.raises(ConfigError, match="threads must be a whole number from 1 to 256"):  # 100,000: never
        BoneAgeEstimator(model=tiny_model, threads=threads)  # type: ignore[arg-type]  # finished; 2.5: "not a model"


@pytest.mark.parametrize("env", ["5000", "99999999999999999999"])
def test_onnx_runtime_never_gets_more_threads_than_cores(monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    from boneage.runtimes.onnx import cores, session_options

    monkeypatch.setenv("OMP_NUM_THREADS", env)  # 5000: ONNX Runtime started 5,000 threads, an image took > 60 s
    assert session_options(None).intra_op_num_threads == cores()
    assert session_options(256).intra_op_num_threads == min(256, cores())  # --threads 64 on 2 cores: 2 s -> 10 s
