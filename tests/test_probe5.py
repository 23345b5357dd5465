"""What the fifth outside probe (issue 19) found, one test each."""

from __future__ import annotations

import importlib.util
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from boneage.errors import AgeError, ImageReadError, ImageTooLargeError, InvalidModelError
from boneage.imageio import read_image
from tests.helpers import synthetic_radiograph


def tiled_tiff(width: int, height: int, tile: tuple[int, int], pixels: bytes) -> bytes:
    """A little-endian 8-bit grey TIFF of one deflated tile holding ``pixels``."""
    blob = zlib.compress(pixels)
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 8), (262, 3, 1), (277, 3, 1),
            (322, 4, tile[0]), (323, 4, tile[1]), (324, 4, 8), (325, 4, len(blob))]
    directory = 8 + len(blob) + len(blob) % 2
    out = b"II*\0" + struct.pack("<I", directory) + blob + b"\0" * (len(blob) % 2)
    out += struct.pack("<H", len(tags))
    for tag, kind, value in tags:
        out += struct.pack("<HHI", tag, kind, 1) + struct.pack("<H" if kind == 3 else "<I", value).ljust(4, b"\0")
    return out + struct.pack("<I", 0)


def test_a_tiff_tile_larger_than_an_image_may_decode_is_refused_from_its_header() -> None:
    # 4 KB: a 64x64 image whose one tile claims 16384x16368 pixels made libtiff and OpenCV allocate 1 GB
    bomb = tiled_tiff(64, 64, (16384, 16368), bytes(64 * 64))
    assert len(bomb) < 5000
    with pytest.raises(ImageTooLargeError, match="16384x16368-pixel tiles"):
        read_image(bomb)
    # a tile larger than a small image, as writers of 256x256 tiles make them, is read as it was
    image = synthetic_radiograph(100, 100)
    tile = np.zeros((112, 112), np.uint8)
    tile[:100, :100] = image
    assert np.array_equal(read_image(tiled_tiff(100, 100, (112, 112), tile.tobytes())).image, image)


def png_with_texts(kind: bytes, count: int, compressed: bool = True) -> bytes:
    """A radiograph PNG with ``count`` text chunks of ``kind`` before its image data."""
    import cv2

    png = cv2.imencode(".png", synthetic_radiograph())[1].tobytes()
    text = zlib.compress(b"\0" * 1000) if compressed else b"text"
    body = b"Comment\0" + ({b"zTXt": b"\0", b"iTXt": bytes([compressed, 0]) + b"\0\0"}[kind]) + text
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return png[:33] + chunk * count + png[33:]


def test_a_png_of_many_compressed_text_chunks_is_refused_before_libpng_inflates_them() -> None:
    # 990 zTXt chunks of 8 KB, each inflating to libpng's 8 MB limit (a 7.8 MB file), took 34 s to decode
    for kind in (b"zTXt", b"iTXt"):
        with pytest.raises(ImageReadError, match="more than 16 compressed text chunks"):
            read_image(png_with_texts(kind, 17))
        assert read_image(png_with_texts(kind, 16)).image.shape == (300, 240)
    assert read_image(png_with_texts(b"iTXt", 100, compressed=False)).image.shape == (300, 240)


@pytest.mark.parametrize("typed", ["20150302", "-20150302", "201503021200"])
def test_an_age_refused_is_never_echoed(typed: str) -> None:
    from boneage.age import parse_age

    with pytest.raises(AgeError) as refused:  # a date of birth as DICOM writes it was shown as "2.01503e+07 months"
        parse_age(typed)
    assert "2015" not in str(refused.value) and "2.01" not in str(refused.value)


def test_an_age_of_an_int_past_floats_is_an_age_error() -> None:
    from boneage.age import check_age

    with pytest.raises(AgeError):  # was OverflowError: int too large to convert to float
        check_age(10**400)


def test_a_model_name_or_models_folder_too_long_is_a_model_error(
        tiny_model: Path, radiograph_png: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from boneage.cli.main import main
    from boneage.models import resolve

    long_name = "a" * 5000  # Path.exists raised OSError ENAMETOOLONG: internal error, exit 70
    with pytest.raises(InvalidModelError, match="cannot be looked up: File name too long"):
        resolve(long_name)
    assert main(["predict", str(radiograph_png), "--sex", "f", "--model", long_name]) == 3
    monkeypatch.setenv("BONEAGE_MODELS_DIR", str(tiny_model.parent / long_name))
    assert main(["predict", str(radiograph_png), "--sex", "f"]) == 3
    err = capsys.readouterr().err
    assert "internal error" not in err and err.count("cannot be looked up") == 2


def test_output_names_too_long_are_input_errors(tiny_model: Path, radiograph_png: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    from boneage.cli.main import main
    from boneage.errors import ConfigError
    from boneage.evaluation import evaluate

    long_name = "a" * 5000  # Path.exists raised OSError ENAMETOOLONG: internal error, exit 70
    common = [str(radiograph_png), "--sex", "f", "--model", str(tiny_model)]
    assert main(["predict", *common, "--output", long_name + ".csv"]) == 2
    plots = importlib.util.find_spec("matplotlib") is not None  # without the plot extra: exit 5 first
    if plots:
        assert main(["predict", *common, "--age", "100", "--plot", long_name + ".png"]) == 2
        assert main(["explain", *common, "--output", long_name + ".png"]) == 2
    err = capsys.readouterr().err
    assert "internal error" not in err and err.count("File name too long") == (3 if plots else 1)
    with pytest.raises(ConfigError, match="File name too long"):
        evaluate(str(tiny_model), [], tmp_path / long_name)


def sof_declares(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header's size changed: one header change, no other byte."""
    i = next(k for k in (jpeg.find(b"\xff\xc0"), jpeg.find(b"\xff\xc2")) if k >= 0)
    return jpeg[: i + 5] + struct.pack(">HH", height, width) + jpeg[i + 9 :]


@pytest.mark.parametrize("progressive", [0, 1])
def test_a_jpeg_whose_data_does_not_fill_its_declared_frame_is_refused(progressive: int) -> None:
    # 300x400 pixels declared as 600x800: libjpeg filled the rest with zeros and only warned on stderr;
    # the radiograph was read as 39.9 months instead of 203.3
    import cv2

    image = synthetic_radiograph(400, 300)
    params = [cv2.IMWRITE_JPEG_QUALITY, 90, cv2.IMWRITE_JPEG_PROGRESSIVE, progressive]
    jpeg = cv2.imencode(".jpg", image, params)[1].tobytes()
    for width, height in ((600, 800), (300, 408), (308, 400)):
        with pytest.raises(ImageReadError, match=f"{width}x{height} frame its header declares"):
            read_image(sof_declares(jpeg, width, height))
    if not progressive:  # cut short and given its end marker back
        with pytest.raises(ImageReadError, match="frame its header declares"):
            read_image(jpeg[: len(jpeg) * 9 // 10] + b"\xff\xd9")
    # a JPEG that fills its frame reads as OpenCV decodes it, with restart markers or a colour one too
    colour = np.dstack([image, image // 2, image // 3])
    for pixels, extra in ((image, []), (image, [cv2.IMWRITE_JPEG_RST_INTERVAL, 3]), (colour, [])):
        jpeg = cv2.imencode(".jpg", pixels, params + extra)[1].tobytes()
        expected = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_UNCHANGED)
        expected = expected if expected.ndim == 2 else cv2.cvtColor(expected, cv2.COLOR_BGR2RGB)
        assert np.array_equal(read_image(jpeg).image, expected)


NAME_WHERE_THE_SEX_GOES = "Doe^Jane MRN-4417-XQ"  # a misaligned CSV row: the name and the ID where the sex goes


def test_a_refused_sex_is_never_echoed(tiny_model: Path, radiograph_png: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    # "sex must be male or female, not 'Doe^Jane ...'": on stderr, in results files and in the service's answer
    import json

    from boneage.cli.main import main
    from boneage.errors import SexError
    from boneage.sex import check_male, parse_sex

    for refused in (lambda: parse_sex(NAME_WHERE_THE_SEX_GOES), lambda: check_male(NAME_WHERE_THE_SEX_GOES),
                    lambda: check_male(4417)):
        with pytest.raises(SexError) as info:
            refused()
        assert "Doe" not in str(info.value) and "4417" not in str(info.value)
    listing, results = tmp_path / "list.csv", tmp_path / "results.jsonl"
    listing.write_text(f"path,sex\n{radiograph_png},{NAME_WHERE_THE_SEX_GOES}\n")
    assert main(["predict", "--csv", str(listing), "--model", str(tiny_model), "--output", str(results)]) == 2
    with pytest.raises(SystemExit):
        main(["predict", str(radiograph_png), "--sex", NAME_WHERE_THE_SEX_GOES, "--model", str(tiny_model)])
    captured = capsys.readouterr()
    for text in (captured.out, captured.err, results.read_text()):
        assert "Doe" not in text and "4417" not in text
    assert "(20 characters) is not one of them" in json.loads(results.read_text())["error"]["message"]
    assert "sex must be male or female" in captured.err


def test_a_refused_sex_is_not_in_the_service_answer(tiny_model: Path, radiograph_png: Path) -> None:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from boneage.estimator import BoneAgeEstimator
    from boneage.serve.app import create_app
    from boneage.serve.settings import ServeSettings

    app = create_app(ServeSettings(), load=lambda: BoneAgeEstimator(model=tiny_model))
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.post("/v1/predict", files={"file": ("x.png", radiograph_png.read_bytes(), "image/png")},
                             data={"sex": NAME_WHERE_THE_SEX_GOES})
    assert answer.status_code in (422, 503) and "Doe" not in answer.text and "4417" not in answer.text


def test_a_dicom_photometric_value_the_standard_does_not_define_is_not_shown() -> None:
    pytest.importorskip("pydicom")
    from boneage.errors import UnsupportedImageError
    from tests.test_dicom import dataset, encoded

    ds = dataset(synthetic_radiograph(), photometric="DOEJANE")
    with pytest.raises(UnsupportedImageError, match="not one the standard defines") as info:
        read_image(encoded(ds))
    assert "DOE" not in str(info.value)


def multipart(fields: list[tuple[str, bytes, str | None]]) -> tuple[bytes, str]:
    """A multipart/form-data body of (name, value, file name or None) fields, repeated names included."""
    boundary = "probe5boundary"
    body = b""
    for name, value, filename in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        body += (b"Content-Type: image/png\r\n" if filename else b"") + b"\r\n" + value + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def asgi_post(app: object, path: str, fields: list[tuple[str, bytes, str | None]]) -> tuple[int, dict]:
    """POST a form to the ASGI app itself, its model loaded by its own lifespan (no HTTP client needed)."""
    import asyncio
    import json

    body, content_type = multipart(fields)

    async def call() -> tuple[int, dict]:
        async with app.router.lifespan_context(app):  # type: ignore[attr-defined]
            for _ in range(200):
                if app.state.service.estimator is not None or app.state.service.failed:  # type: ignore[attr-defined]
                    break
                await asyncio.sleep(0.05)
            sent: list[dict] = []
            received = iter([{"type": "http.request", "body": body, "more_body": False}])

            async def receive() -> dict:
                return next(received, {"type": "http.disconnect"})

            async def send(message: dict) -> None:
                sent.append(message)

            scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                     "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                     "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())],
                     "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
            await app(scope, receive, send)  # type: ignore[operator]
        status = next(m["status"] for m in sent if m["type"] == "http.response.start")
        return status, json.loads(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))

    return asyncio.run(call())


def test_the_service_refuses_a_form_field_given_twice(tiny_model: Path, radiograph_png: Path) -> None:
    # two sex or two file fields gave no error, and the last one won
    pytest.importorskip("fastapi")
    from boneage.estimator import BoneAgeEstimator
    from boneage.serve.app import create_app
    from boneage.serve.settings import ServeSettings

    app = create_app(ServeSettings(), load=lambda: BoneAgeEstimator(model=tiny_model))
    image = radiograph_png.read_bytes()
    one = [("file", image, "x.png"), ("sex", b"male", None)]
    assert asgi_post(app, "/v1/predict", one)[0] == 200
    for twice in ([*one, ("sex", b"female", None)], [*one, ("file", image, "y.png")], [*one, ("age", b"120", None),
                                                                                        ("age", b"12", None)]):
        status, body = asgi_post(app, "/v1/predict", twice)
        assert status == 422 and body["error"]["code"] == "invalid_request", body
        assert "fields; send each field once" in body["error"]["message"]


def test_programmers_mistakes_in_the_api_are_typed_errors(tiny_model: Path, radiograph_png: Path) -> None:
    from boneage.errors import BoneAgeError, ConfigError, InputError
    from boneage.estimator import BoneAgeEstimator

    # model=5 or model=b"..." raised a bare TypeError from pathlib
    for model in (5, b"\x08\x07onnx bytes", 2.5):
        with pytest.raises(ConfigError, match="model must be a registered name or a path"):
            BoneAgeEstimator(model=model)  # type: ignore[arg-type]
    # check_input="no" is truthy: the checks stayed on
    for flag in ("no", "False", 0, None):
        with pytest.raises(ConfigError, match="check_input must be True or False"):
            BoneAgeEstimator(model=tiny_model, check_input=flag)  # type: ignore[arg-type]
    estimator = BoneAgeEstimator(model=tiny_model, check_input=np.bool_(False))
    assert estimator.check_input is False
    # predict_many("r.png", ...) read each character as a file name; a bool had no len (TypeError)
    one = str(radiograph_png)
    for images, male, ages in ((one, "m" * len(one), None), (radiograph_png, [True], None), ([one], True, None),
                               ([one], "m", None), ([one], [True], "1"), (None, None, None)):
        with pytest.raises(InputError, match="must be a sequence with one item per image") as info:
            estimator.predict_many(images, male, ages=ages)  # type: ignore[arg-type]
        assert isinstance(info.value, BoneAgeError)
    (result,) = estimator.predict_many((one,), (True,), ages=[120.0])
    assert not isinstance(result, BoneAgeError)
