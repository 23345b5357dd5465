"""``boneage serve`` through FastAPI's test client: every endpoint and every error code, and the
same JSON as the facade for the same image (extra: serve; skipped without it)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="needs the serve extra: pip install 'boneage[serve]'")
pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")

from fastapi.testclient import TestClient  # noqa: E402

from boneage.errors import MissingDependencyError  # noqa: E402
from boneage.estimator import BoneAgeEstimator  # noqa: E402
from boneage.serve.app import SHA_HEADER, create_app  # noqa: E402
from boneage.serve.settings import ServeSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
# samples/README.md: file, sex, the clinical reading
CASES = [("1377.png", False, "15y"), ("1383.png", True, "150"), ("3020.png", False, None)]


@pytest.fixture(scope="module")
def estimator() -> BoneAgeEstimator:
    return BoneAgeEstimator()


@contextlib.contextmanager
def started(app: Any) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as client:
        for _ in range(200):  # the model loads in a thread at startup
            if client.get("/readyz").status_code != 503 or app.state.service.failed:
                break
            time.sleep(0.05)
        yield client


@pytest.fixture(scope="module")
def client(estimator: BoneAgeEstimator) -> Iterator[TestClient]:
    with started(create_app(ServeSettings(), load=lambda: estimator)) as client:
        yield client


def upload(client: TestClient, data: bytes, sex: str | None = "female", age: str | None = None,
           path: str = "/v1/predict", name: str = "x.png") -> Any:
    form = {k: v for k, v in {"sex": sex, "age": age}.items() if v is not None}
    return client.post(path, files={"file": (name, data, "image/png")}, data=form)


def png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return bytes(data.tobytes())


def error_of(response: Any, status: int) -> str:
    """The code of a JSON error with this status; the body is exactly {"error": {"code", "message"}}."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert "Traceback" not in response.text and 'File "' not in response.text
    return str(body["error"]["code"])


# --- endpoints -----------------------------------------------------------------------------------

def test_health_ready_and_model_card(client: TestClient, estimator: BoneAgeEstimator) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready", "model": estimator.card.ref}
    info = client.get("/v1/model").json()
    sha = hashlib.sha256(estimator.path.read_bytes()).hexdigest()
    assert (info["name"], info["version"], info["sha256"]) == (estimator.card.name, estimator.card.version, sha)
    assert info["known_release"] is True and info["runtime"] == "onnx"
    assert info["card"] == json.loads(estimator.card.model_dump_json())
    registry = json.loads((ROOT / "exported" / "registry.json").read_text())
    assert sha in {m["sha256"] for m in registry["models"]}


def test_openapi_docs_and_page(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/explain", "/v1/chart", "/v1/model", "/healthz", "/readyz"} <= set(schema["paths"])
    assert "Prediction" in schema["components"]["schemas"] and "ErrorBody" in schema["components"]["schemas"]
    assert "swagger" in client.get("/docs").text.lower()
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="file"' in page.text and "static/app.js" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched from the internet
    for asset in ("static/app.js", "static/style.css"):
        text = client.get(f"/{asset}").text
        assert text and "http://" not in text and "https://" not in text and "@import" not in text


@pytest.mark.parametrize(("name", "male", "age"), CASES)
def test_predict_is_the_facade(client: TestClient, estimator: BoneAgeEstimator, name: str, male: bool,
                               age: str | None) -> None:
    """Field for field the library's answer for the same bytes; from the path, only ``source`` differs."""
    data = (SAMPLES / name).read_bytes()
    months = None if age is None else (180.0 if age == "15y" else float(age))
    response = upload(client, data, "male" if male else "female", age)
    assert response.status_code == 200, response.text
    assert response.json() == estimator.predict(data, male, months).model_dump(mode="json")
    from_path = estimator.predict(SAMPLES / name, male, months).model_dump(mode="json")
    assert response.json() == {**from_path, "source": None}
    assert response.headers[SHA_HEADER] == hashlib.sha256(estimator.model.data).hexdigest()
    assert (response.json()["comparison"] is None) == (age is None)


def test_full_size_radiograph(client: TestClient, estimator: BoneAgeEstimator) -> None:
    """An original RSNA plate (about 2,000 px, over 1 MB), as a department would send it."""
    data_dir = os.environ.get("BONEAGE_DATA")
    if not data_dir or not (Path(data_dir) / "radiographs").is_dir():
        pytest.skip("needs the RSNA data: set BONEAGE_DATA (radiographs/)")
    path = sorted((Path(data_dir) / "radiographs").glob("*.png"))[0]
    data = path.read_bytes()
    response = upload(client, data, "female", "14y")
    assert response.status_code == 200, response.text
    assert response.json() == estimator.predict(data, False, 168.0).model_dump(mode="json")


def test_explain_and_chart_are_pngs(client: TestClient) -> None:
    data = (SAMPLES / "1377.png").read_bytes()
    for path in ("/v1/explain", "/v1/chart"):
        response = upload(client, data, "female", "15y", path=path)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/png"
        image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and min(image.shape[:2]) > 200
    assert error_of(upload(client, data, "female", None, path="/v1/chart"), 422) == "age_required"


def test_chart_without_matplotlib(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def missing() -> None:
        raise MissingDependencyError('a growth chart needs matplotlib: pip install "boneage[plot]"')

    monkeypatch.setattr("boneage.chart.require_matplotlib", missing)
    response = upload(client, (SAMPLES / "1377.png").read_bytes(), "female", "15y", path="/v1/chart")
    assert error_of(response, 501) == "missing_dependency"
    assert "boneage[plot]" in response.json()["error"]["message"]


def dicom_of(png_path: Path, **tags: str) -> bytes:
    """A DX DICOM (Part 10, uncompressed) holding a sample's pixels, with these header tags."""
    pytest.importorskip("pydicom", reason="needs the dicom extra")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    pixels = cv2.imread(str(png_path), cv2.IMREAD_GRAYSCALE)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.Modality, ds.SamplesPerPixel, ds.PhotometricInterpretation = "DX", 1, "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_dicom_takes_sex_and_age_from_its_header(client: TestClient, estimator: BoneAgeEstimator,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    data = dicom_of(SAMPLES / "1377.png", PatientSex="F", PatientBirthDate="20080315", StudyDate="20230610",
                    PatientName="Doe^Jane", PatientID="MRN-4417-XQ")
    with caplog.at_level(logging.DEBUG, logger="boneage"):
        response = upload(client, data, sex=None, name="Doe_Jane.dcm")
    assert response.status_code == 200, response.text
    assert response.json() == estimator.predict(data).model_dump(mode="json")
    assert response.json()["male"] is False and response.json()["comparison"] is not None
    for secret in ("Doe", "Jane", "MRN-4417", "2008", "20230610"):
        assert secret not in response.text and secret not in caplog.text


def test_dicom_without_the_extra_names_it(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    data = dicom_of(SAMPLES / "1377.png", PatientSex="F")
    monkeypatch.setitem(sys.modules, "pydicom", None)  # as if the dicom extra were not installed
    response = upload(client, data, sex="female", name="x.dcm")
    assert error_of(response, 501) == "missing_dependency" and "boneage[dicom]" in response.json()["error"]["message"]


# --- errors ----------------------------------------------------------------------------------------

def test_bad_files(client: TestClient) -> None:
    good = (SAMPLES / "1377.png").read_bytes()
    assert error_of(upload(client, b"%PDF-1.7 not an image"), 415) == "unsupported_media_type"
    assert error_of(upload(client, b""), 400) == "unreadable_image"
    assert error_of(upload(client, good[: len(good) // 3]), 400) == "unreadable_image"  # truncated
    assert error_of(upload(client, png(np.full((16, 16), 128, np.uint8))), 422) == "image_too_small"
    noise = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    assert error_of(upload(client, png(noise)), 422) == "not_a_radiograph"
    # a header that claims 40000 x 40000 pixels: refused before decoding
    huge = bytearray(png(np.zeros((64, 64), np.uint8)))
    huge[16:24] = (40000).to_bytes(4, "big") * 2
    assert error_of(upload(client, bytes(huge)), 413) == "image_too_large"


def test_bad_sex_and_age(client: TestClient) -> None:
    data = (SAMPLES / "1377.png").read_bytes()
    assert error_of(upload(client, data, sex="yes"), 422) == "invalid_sex"
    missing = upload(client, data, sex=None)
    assert error_of(missing, 422) == "invalid_sex"  # a PNG cannot say its sex
    assert "the form's sex field" in missing.json()["error"]["message"]  # it named only the CLI's options (probe 16)
    assert error_of(upload(client, data, age="2012-03-04"), 422) == "invalid_age"
    assert error_of(upload(client, data, age="400"), 422) == "invalid_age"
    assert error_of(upload(client, data, age="-3"), 422) == "invalid_age"
    assert error_of(client.post("/v1/predict", data={"sex": "female"}), 422) == "invalid_request"
    assert error_of(client.get("/v1/nothing"), 404) == "not_found"
    assert error_of(client.get("/v1/predict"), 405) == "method_not_allowed"


def test_a_form_field_given_twice_is_refused(client: TestClient) -> None:
    # two sex or two file fields gave no error, and the last one won (issue 19, fifth probe)
    data = (SAMPLES / "1377.png").read_bytes()
    image = ("x.png", data, "image/png")
    for path in ("/v1/predict", "/v1/explain"):
        assert error_of(client.post(path, files={"file": image}, data={"sex": ["male", "female"]}), 422) == "invalid_request"
    twice = client.post("/v1/predict", files=[("file", image), ("file", image)], data={"sex": "male"})
    assert error_of(twice, 422) == "invalid_request" and "2 'file' fields" in twice.json()["error"]["message"]
    assert error_of(client.post("/v1/predict", files={"file": image}, data={"sex": "male", "age": ["120", "12"]}),
                    422) == "invalid_request"


def test_upload_size_limit(estimator: BoneAgeEstimator) -> None:
    """Refused from Content-Length, and while streaming when there is none: never read to the end."""
    limit = 64 * 1024
    app = create_app(ServeSettings(max_upload_bytes=limit), load=lambda: estimator)
    with started(app) as client:
        assert upload(client, (SAMPLES / "3020.png").read_bytes()).status_code == 200  # under the limit
        assert error_of(upload(client, b"\x89PNG\r\n\x1a\n" + bytes(2 * limit)), 413) == "upload_too_large"

        def chunks() -> Iterator[bytes]:  # chunked: no Content-Length to refuse it by
            yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n'
            yield from (bytes(16 * 1024) for _ in range(64))
            yield b"\r\n--B--\r\n"

        response = client.post("/v1/predict", content=chunks(),
                               headers={"content-type": "multipart/form-data; boundary=B"})
        assert error_of(response, 413) == "upload_too_large"


def test_body_limit_stops_reading() -> None:
    """At the ASGI level (the test client buffers a body before the app sees it): an endless body is
    read only one chunk past the limit, then answered 413."""
    import anyio

    from boneage.serve.limits import BodyLimit

    pulled, sent = 0, []

    async def endless() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        assert pulled < 1000, "the limit did not stop the reading"
        return {"type": "http.request", "body": bytes(16 * 1024), "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        from starlette.requests import Request

        await Request(scope, receive).body()

    async def call() -> None:
        from starlette.exceptions import HTTPException

        scope = {"type": "http", "method": "POST", "path": "/v1/predict", "headers": []}
        with pytest.raises(HTTPException) as raised:  # FastAPI's handler turns it into the JSON 413
            await BodyLimit(app, 64 * 1024)(scope, endless, send)
        assert raised.value.status_code == 413

    anyio.run(call)
    assert pulled == 5  # 4 chunks make the limit, the 5th passes it


class Blocking:
    """The real estimator, whose predictions wait for ``go`` (or raise ``fail``): requests in flight on demand."""

    def __init__(self, real: BoneAgeEstimator, fail: Exception | None = None) -> None:
        self.real, self.fail, self.go, self.inside = real, fail, threading.Event(), 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def predict_many(self, *args: Any, **kwargs: Any) -> Any:
        self.inside += 1
        if self.fail is not None:
            raise self.fail
        assert self.go.wait(30)
        return self.real.predict_many(*args, **kwargs)


def test_overload_is_503_and_the_loop_stays_free(estimator: BoneAgeEstimator) -> None:
    slow = Blocking(estimator)
    app = create_app(ServeSettings(max_concurrent=1, queue=1), load=lambda: slow)  # type: ignore[arg-type,return-value]
    data = (SAMPLES / "1377.png").read_bytes()
    with started(app) as client:
        answers: list[int] = []
        threads = [threading.Thread(target=lambda: answers.append(upload(client, data).status_code)) for _ in range(2)]
        for t in threads:
            t.start()
        gate = app.state.service.gate
        deadline = time.monotonic() + 20
        while gate.admitted < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert gate.admitted == 2 and slow.inside == 1  # one running, one queued
        assert client.get("/healthz").status_code == 200  # the event loop is not blocked
        third = upload(client, data)
        assert error_of(third, 503) == "overloaded" and third.headers["retry-after"] == "1"
        slow.go.set()
        for t in threads:
            t.join(30)
        assert answers == [200, 200]
        assert upload(client, data).status_code == 200  # the slots are free again


def test_not_ready_while_loading_and_after_a_failed_load(estimator: BoneAgeEstimator) -> None:
    from boneage.errors import ModelNotFoundError

    release = threading.Event()

    def loading() -> BoneAgeEstimator:
        release.wait(30)
        return estimator

    with TestClient(create_app(load=loading)) as client:
        assert client.get("/healthz").status_code == 200
        assert error_of(client.get("/readyz"), 503) == "not_ready"
        assert error_of(upload(client, (SAMPLES / "1377.png").read_bytes()), 503) == "not_ready"
        release.set()

    def broken() -> BoneAgeEstimator:
        raise ModelNotFoundError("no model named nope")

    with started(create_app(load=broken)) as client:
        response = client.get("/readyz")
        assert error_of(response, 503) == "not_ready" and "no model named nope" in response.json()["error"]["message"]


def test_internal_error_is_json_and_logs_no_data(estimator: BoneAgeEstimator, caplog: pytest.LogCaptureFixture) -> None:
    failing = Blocking(estimator, RuntimeError("/secret/path/Jane_Doe"))
    with started(create_app(load=lambda: failing)) as client:  # type: ignore[arg-type,return-value]
        with caplog.at_level(logging.INFO, logger="boneage.serve"):
            response = upload(client, (SAMPLES / "1377.png").read_bytes())
        assert error_of(response, 500) == "internal_error"
        assert "Jane" not in response.text and "Jane" not in caplog.text
        assert "RuntimeError" in caplog.text


def test_logs_hold_no_patient_data(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    data = (SAMPLES / "1383.png").read_bytes()
    with caplog.at_level(logging.DEBUG):
        assert upload(client, data, "male", "12y6m", name="Doe_John_2013-05-06.png").status_code == 200
        assert error_of(upload(client, data, "male", "1999-01-02", name="Doe_John.png"), 422) == "invalid_age"
        assert error_of(client.get("/patients/Doe_John/2013-05-06?mrn=0042"), 404) == "not_found"
    # every logger but the test's own HTTP client (httpx logs the URL it sends)
    logged = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    assert "POST /v1/predict 200" in logged and "POST /v1/predict 422" in logged
    assert "GET (another path) 404" in logged
    for secret in ("Doe", "John", "2013-05-06", "12y6m", "1999-01-02", "0042", "patients"):
        assert secret not in logged


# --- command line and packaging ----------------------------------------------------------------------

def test_cli_options_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    from boneage.cli.main import main

    assert main(["serve", "--queue", "-1"]) == 2
    assert "--queue" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "--max-concurrent" in capsys.readouterr().out


def test_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from boneage.serve import require_serve

    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"boneage\[serve\]"):
        require_serve()


def test_core_import_needs_no_web_framework() -> None:
    code = ("import sys, boneage, boneage.estimator, boneage.cli.main, boneage.serve; "
            "sys.exit(any(m in sys.modules for m in ('fastapi', 'starlette', 'uvicorn')))")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_static_files_are_in_the_package() -> None:
    from importlib.resources import files

    static = files("boneage.serve") / "static"
    assert {"index.html", "app.js", "style.css"} <= {p.name for p in static.iterdir()}
    assert io.BytesIO((static / "index.html").read_bytes()).read(15) == b"<!doctype html>"
