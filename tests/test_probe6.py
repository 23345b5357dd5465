"""What the sixth outside probe (issue 19) found, one test each."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from boneage.errors import ImageReadError
from boneage.imageio import read_image
from boneage.jpeg import jpeg_layout
from tests.helpers import special_files, synthetic_radiograph

EOI = b"\xff\xd9"


def jpeg(pixels: np.ndarray, progressive: int) -> bytes:
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, progressive]
    return bytes(cv2.imencode(".jpg", pixels, params)[1].tobytes())


def opencv_reads(data: bytes) -> np.ndarray:
    import cv2

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def sof_declares(data: bytes, width: int, height: int) -> bytes:
    i = next(k for k in (data.find(b"\xff\xc0"), data.find(b"\xff\xc2")) if k >= 0)
    return data[: i + 5] + struct.pack(">HH", height, width) + data[i + 9 :]


@pytest.mark.parametrize("colour", [False, True])
def test_a_progressive_jpeg_cut_after_a_scan_and_given_its_end_marker_back_is_refused(colour: bool) -> None:
    # cut after its first scan (DC only, a blur: 10.6 grey levels off on average) and given its end
    # marker back: decoded silently, as every cut after a later scan or inside the last one was
    grey = synthetic_radiograph(400, 300)
    pixels = np.dstack([grey, grey // 2, grey // 3]) if colour else grey
    whole = jpeg(pixels, 1)
    layout = jpeg_layout(whole)
    assert layout is not None and len(layout.scans) >= 6 and layout.complete
    for _, end, _ in layout.scans[:-1]:
        with pytest.raises(ImageReadError, match="scans end before they complete the 300x400 image"):
            read_image(whole[:end] + EOI)
    start, end, _ = layout.scans[-1]
    for cut in (start + 20, (start + end) // 2, end - 20):  # inside the last scan: its refinement runs dry
        with pytest.raises(ImageReadError, match="ends before the 300x400 frame its header declares"):
            read_image(whole[:cut] + EOI)
    assert np.array_equal(read_image(whole).image, opencv_reads(whole))


def test_valid_multi_scan_jpegs_read_as_opencv_decodes_them() -> None:
    from PIL import Image

    grey = synthetic_radiograph(333, 251)  # odd sizes: partial blocks at the edges
    for pixels in (grey, np.dstack([grey, grey // 2, grey // 3])):
        for options in ({"progressive": True}, {"progressive": True, "optimize": True},
                        {"progressive": True, "subsampling": 0}):
            buffer = io.BytesIO()
            Image.fromarray(pixels).save(buffer, "JPEG", quality=90, **options)
            data = buffer.getvalue()
            assert np.array_equal(read_image(data).image, opencv_reads(data))
        data = jpeg(pixels, 1) + b"\0" * 10  # bytes after the end marker, as some writers leave them
        assert np.array_equal(read_image(data).image, opencv_reads(data))


def dicom_of_jpeg(frame: bytes, rows: int, columns: int) -> bytes:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    from tests.test_dicom import dataset, encoded

    ds = dataset(np.zeros((rows, columns), np.uint8))
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    return encoded(ds)


@pytest.mark.parametrize("progressive", [0, 1])
def test_a_dicom_jpeg_frame_is_checked_as_a_jpeg_file_is(progressive: int) -> None:
    # a DICOM's JPEG frame cut short and given its end marker back, or whose frame header declares
    # more rows than its data holds, was decoded by pydicom's plugins with the rest filled with zeros
    pytest.importorskip("pydicom", reason="the dicom extra is not installed: pip install -e '.[dicom]'")
    image = synthetic_radiograph(400, 300)
    whole = jpeg(image, progressive)
    short = sof_declares(jpeg(image[:200], progressive), 300, 400)  # 200 rows of data declared as 400
    for frame in (whole[: len(whole) * 9 // 10] + EOI, short):
        with pytest.raises(ImageReadError, match="ends before the 300x400 frame its header declares"):
            read_image(dicom_of_jpeg(frame, 400, 300))
    if progressive:
        layout = jpeg_layout(whole)
        assert layout is not None
        with pytest.raises(ImageReadError, match="scans end before they complete"):
            read_image(dicom_of_jpeg(whole[: layout.scans[0][1]] + EOI, 400, 300))
    assert np.array_equal(read_image(dicom_of_jpeg(whole, 400, 300)).image, opencv_reads(whole))


def test_a_file_name_that_is_not_utf8_can_be_written_to_parquet(tiny_model: Path, radiograph_png: Path,
                                                                 tmp_path: Path) -> None:
    # pyarrow refused the whole file (UnicodeEncodeError: surrogates not allowed): internal error, exit 70
    pq = pytest.importorskip("pyarrow.parquet", reason="the parquet extra is not installed")
    from boneage.cli.main import main

    try:
        odd = Path(os.fsdecode(bytes(tmp_path) + b"/hand-\xff\xfe.png"))
        odd.write_bytes(radiograph_png.read_bytes())
    except (OSError, UnicodeError):
        pytest.skip("this file system keeps only UTF-8 names")
    missing = Path(os.fsdecode(bytes(tmp_path) + b"/gone-\xfa.png"))
    results = tmp_path / "results.parquet"
    common = ["predict", str(odd), str(missing), "--sex", "f", "--model", str(tiny_model), "--output", str(results)]
    assert main(common) == 2  # the missing file only
    rows = pq.read_table(results).to_pylist()
    assert [r["source"] for r in rows] == [f"{tmp_path}/hand-\\xff\\xfe.png", f"{tmp_path}/gone-\\xfa.png"]
    assert rows[0]["error_type"] is None and "gone-\\xfa.png" in rows[1]["error"]
    assert main([*common, "--resume"]) == 2  # the answered file is known again; the missing one is tried again
    assert [r["source"] for r in pq.read_table(results).to_pylist()].count(rows[0]["source"]) == 1


def test_evaluate_ids_and_export_steps_files_are_read_bounded_and_typed(tmp_path: Path) -> None:
    # evaluate --ids /dev/zero filled memory (MemoryError, exit 70), a FIFO with no writer hung;
    # {"val_id_list": 5} was a TypeError (exit 70); export --preprocessing the same
    from boneage.cli.export import read_preprocessing
    from boneage.errors import ConfigError
    from boneage.evaluation import read_ids

    for name in special_files(tmp_path):
        with pytest.raises(ConfigError, match="not a regular file"):
            read_ids(name)
        with pytest.raises(ConfigError, match="not a regular file"):
            read_preprocessing(str(name))
    for value in ("5", '[["1377"]]', '"1377"', "{}"):
        data = tmp_path / "data.json"
        data.write_text(f'{{"val_id_list": {value}}}')
        with pytest.raises(ConfigError, match="cannot read ids"):
            read_ids(data)
    data.write_text('{"val_id_list": ["1377", "1394"]}')
    assert read_ids(data) == {"1377", "1394"}
    deep = tmp_path / "steps.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="--preprocessing"):
        read_preprocessing(str(deep))


def test_a_plugins_failure_is_shown_escaped_in_listings_and_log_lines(monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # `boneage plugins` printed a failing plugin's name and error as they were, and so did the log
    # line of every command: escape sequences (clear screen, window title) reached the terminal
    import logging

    from boneage import plugins
    from boneage.cli.main import PrintableFormatter, main
    from tests.test_plugins import FakeEntryPoint

    points = [FakeEntryPoint("bro\x1b]0;title\x07ken", ImportError("no module \x1b[2J named"))]
    monkeypatch.setattr(plugins.importlib.metadata, "entry_points", lambda group: points if group == "boneage" else [])
    monkeypatch.setenv(plugins.DISABLE_AUTOLOAD_ENV, "0")
    plugins.reset_plugins()
    assert main(["plugins"]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "bro\\x1b]0;title\\x07ken" in out and "no module \\x1b[2J named" in out
    record = logging.LogRecord("boneage", logging.WARNING, __file__, 1, "plugin %r failed: %s", ("a\x1bb", "c\x1b[2Jd"), None)
    line = PrintableFormatter("boneage: %(message)s").format(record)
    assert "\x1b" not in line and line.endswith("c\\x1b[2Jd")
    monkeypatch.setenv("BONEAGE_MODELS_DIR", "/nonexistent/m\x1b[31mx")
    main(["models"])
    assert "\x1b" not in capsys.readouterr().out


def test_batch_size_is_bounded_on_the_command_line_and_in_the_library(tiny_model: Path, radiograph: np.ndarray,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # --batch-size 1000000000 and predict_many(..., batch_size=10**9) were taken: memory grows with it
    from boneage.cli.main import main
    from boneage.errors import ConfigError, InputError
    from boneage.estimator import BoneAgeEstimator
    from boneage.training.config import load_config

    MAX_BATCH_SIZE = 4096  # noqa: N806
    for command in (["predict", "x.png", "--sex", "m"], ["train"]):
        for size in ("1000000000", str(MAX_BATCH_SIZE + 1), "0"):
            with pytest.raises(SystemExit) as exited:
                main([*command, "--batch-size", size])
            assert exited.value.code == 2 and "--batch-size" in capsys.readouterr().err
    est = BoneAgeEstimator(tiny_model)
    for size in (10**9, MAX_BATCH_SIZE + 1, 0, -1, 2.5, "4", True):
        with pytest.raises(InputError, match=f"batch_size must be a whole number from 1 to {MAX_BATCH_SIZE}"):
            est.predict_many([radiograph], [True], batch_size=size)  # type: ignore[arg-type]
    assert len(est.predict_many([radiograph], [True], batch_size=MAX_BATCH_SIZE)) == 1
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(None, {"sources": [{"labels": "l.csv", "images": "i"}], "batch_size": 10**9})


def test_an_unsupported_card_schema_is_quoted_short_and_escaped() -> None:
    # the schema version was quoted whole: up to the card's size cap (1 MiB), escape sequences included
    import json

    from boneage.errors import InvalidModelError
    from boneage.modelcard import CARD_KEY, parse_card

    long = "\x1b[2J" + "9" * 500_000
    for schema, shown in ((long, r"'\x1b[2J9999999999999999'... (500,004 characters)"), ("9.0", "'9.0'"),
                          (["1.0"] * 100_000, "a JSON array"), ({"v": "x" * 1000}, "a JSON object"), (2, "2"),
                          (10**30, "a number of more than 20 digits"), (None, "None")):
        with pytest.raises(InvalidModelError) as refused:
            parse_card({CARD_KEY: json.dumps({"schema_version": schema})}, "m.onnx")
        message = str(refused.value)
        assert f"model card schema {shown} is not supported" in message
        assert len(message) < 200 and "\x1b" not in message


def test_a_masked_array_is_refused_not_read_with_its_mask_ignored(tiny_model: Path, radiograph: np.ndarray) -> None:
    # predict read a masked array's data under the mask as pixels, and answered
    from boneage.errors import UnsupportedImageError
    from boneage.estimator import BoneAgeEstimator

    masked = np.ma.masked_array(radiograph, mask=np.zeros(radiograph.shape, bool))
    masked[:100] = np.ma.masked
    est = BoneAgeEstimator(tiny_model)
    for image in (masked, np.ma.masked_array(radiograph)):
        with pytest.raises(UnsupportedImageError, match=r"masked array.*fill it first \(e.g. image.filled\(0\)\)"):
            est.predict(image, male=True)
        with pytest.raises(UnsupportedImageError, match="masked array"):
            read_image(image)
    assert isinstance(est.predict_many([masked], [True])[0], UnsupportedImageError)
    assert est.predict(masked.filled(0), male=True).bone_age_months > 0


def test_a_symlink_in_a_folder_to_a_text_file_is_not_a_readable_image_and_its_text_is_not_shown(
        tiny_model: Path, radiograph_png: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a folder's links are followed wherever they lead (datasets are built from links), with the
    # user's own permissions: a link to a non-image must say so without showing what it holds
    import json

    from boneage.cli.main import main

    secret = tmp_path / "outside" / "notes.txt"
    secret.parent.mkdir()
    secret.write_text("Doe^Jane MRN-4417-XQ born 2015-03-02\n" * 3)
    folder = tmp_path / "dataset"
    folder.mkdir()
    (folder / "a.png").symlink_to(radiograph_png)  # a link to an image outside the folder: followed, answered
    (folder / "b.png").symlink_to(secret)
    (folder / "c.png").symlink_to(tmp_path / "gone.png")  # dangling
    (folder / "loop").symlink_to(folder, target_is_directory=True)  # a linked folder is not walked: no loop
    for extra in ([], ["--json"]):
        assert main(["predict", str(folder), "--sex", "f", "--model", str(tiny_model), *extra]) == 2
        captured = capsys.readouterr()
        shown = captured.out + captured.err
        assert "Doe^Jane" not in shown and "4417" not in shown and "2015" not in shown
        assert "b.png" in shown and "not a readable image" in shown and "c.png" in shown
    results = json.loads(captured.out)
    assert [Path(r["source"]).name for r in results] == ["a.png", "b.png", "c.png"]
    assert "bone_age_months" in results[0]
