"""The ASGI application: one shared estimator behind a bounded pool, JSON errors with stable codes,
and the single page. Built by :func:`create_app`, so tests and the CLI make the same service."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import cv2
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from boneage._version import __version__
from boneage.age import parse_age
from boneage.errors import BoneAgeError, validation_problems
from boneage.estimator import BoneAgeEstimator
from boneage.modelcard import ModelCard
from boneage.prediction import Prediction
from boneage.serve.errors import ErrorBody, ServeError, error_response, library_error
from boneage.serve.limits import BodyLimit, Gate
from boneage.serve.settings import ServeSettings
from boneage.serve.upload import check_upload
from boneage.sex import parse_sex

log = logging.getLogger("boneage.serve")
# python-multipart reports a malformed body through logging as a warning, which reached the service's
# terminal (through Python's last resort, or the CLI's own root handler) with a byte of the client's body in
# it ("Expected boundary character 122, got 68"). The 400 answer says it; only its errors pass on.
logging.getLogger("python_multipart").setLevel(logging.ERROR)
STATIC = Path(__file__).parent / "static"
SHA_HEADER = "X-Boneage-Model-Sha256"
HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "upload_too_large"}
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in [(400, "unreadable image"), (413, "upload or image too large"), (415, "not an image format"),
                         (422, "bad sex, age or image (see the code)"), (503, "busy or model not loaded")]
}
Loader = Callable[[], BoneAgeEstimator]
T = TypeVar("T")


class ModelInfo(BaseModel):
    """The model this service answers with: its card, its file's sha256 and whether that is a known release."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    version: str
    sha256: str
    known_release: bool
    runtime: str
    reference: str
    card: ModelCard


class Service:
    """What the routes share: the settings, the pool, and the estimator once it has loaded."""

    def __init__(self, settings: ServeSettings, load: Loader) -> None:
        """``load`` is not called here but by :meth:`start`, off the event loop."""
        self.settings, self.load = settings, load
        self.gate = Gate(settings.max_concurrent, settings.queue)
        self.estimator: BoneAgeEstimator | None = None
        self.sha256 = ""
        self.failed: str | None = None

    async def start(self) -> None:
        """Load the model off the event loop, so /healthz answers (and /readyz says 'not yet') meanwhile."""
        try:
            estimator = await asyncio.to_thread(self.load)
        except BoneAgeError as exc:
            self.failed = str(exc)
            log.error("the model could not be loaded: %s", exc)
            return
        except Exception as exc:  # noqa: BLE001 - /readyz must say it failed, not "still loading" forever
            self.failed = f"internal error: {type(exc).__name__}"
            log.error("the model could not be loaded: %s", type(exc).__name__)
            return
        self.sha256 = hashlib.sha256(estimator.model.data).hexdigest()
        self.estimator = estimator
        log.info("ready: %s on %s", estimator.card.ref, estimator.runtime_name)

    def ready(self) -> BoneAgeEstimator:
        """The estimator, or a 503 :class:`ServeError` with Retry-After while it loads or after it failed."""
        if self.estimator is None:
            why = f"the model failed to load: {self.failed}" if self.failed else "the model is still loading"
            raise ServeError(503, "not_ready", why, {"Retry-After": "5"})
        return self.estimator


class AccessLog:
    """One line a request: method, route, status, milliseconds. Never a query string, a file name,
    a form field, or a path the service does not have (a client may put a name in it): those may
    identify a patient."""

    def __init__(self, app: ASGIApp, paths: frozenset[str]) -> None:
        """``paths``: the app's own routes, the only paths logged as they are."""
        self.app, self.paths = app, paths

    def route(self, path: str) -> str:
        """The path as logged: a known route as it is, anything else collapsed so no name reaches the log."""
        if path.startswith("/static/"):
            return "/static/..."
        return path if path in self.paths else "(another path)"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI middleware: logs after the response, also when the app raised (then as 500)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            log.info("%s %s %d %.0f ms", scope["method"], self.route(scope["path"]), status,
                     1000 * (time.perf_counter() - start))


class HeadAsGet:
    """ASGI middleware: HEAD is answered as GET, without the body (RFC 9110). FastAPI's routes take
    only the methods they name, so a monitor's ``HEAD /healthz`` got 405; this covers every GET route,
    without a second, HEAD operation of each in the OpenAPI schema."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry: only HTTP HEAD requests are changed."""
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}  # the headers, Content-Length included, stay GET's
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def default_loader(settings: ServeSettings) -> Loader:
    """How the service makes its estimator from the settings; tests pass their own loader instead."""
    return lambda: BoneAgeEstimator(settings.model, runtime=settings.runtime, threads=settings.threads,
                                    check_input=settings.check_input, views=settings.views)


def create_app(settings: ServeSettings | None = None, load: Loader | None = None) -> FastAPI:
    """The service. ``load`` makes the one shared estimator (default: from ``settings``); it runs
    in a thread at startup."""
    settings = settings or ServeSettings()
    service = Service(settings, load or default_loader(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(service.start())
        yield
        task.cancel()

    app = FastAPI(title="boneage", version=__version__, lifespan=lifespan,
                  description="Pediatric bone age from a hand radiograph. Research and education use only: "
                              "not a medical device. See docs/serve.md.")
    app.state.service = service
    _handlers(app)
    _routes(app, service)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(HeadAsGet)
    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes)
    app.add_middleware(AccessLog, paths=frozenset(getattr(r, "path", "") for r in app.routes))
    return app


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(BoneAgeError)
    async def library(request: Request, exc: BoneAgeError) -> JSONResponse:
        mapped = library_error(exc)
        if mapped.status >= 500:
            log.error("%s on %s: %s", type(exc).__name__, request.url.path, mapped.code)
        return error_response(mapped.status, mapped.code, mapped.message)

    @app.exception_handler(HTTPException)
    async def http(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(exc.status_code, HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}"),
                              str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", validation_problems(exc.errors(), skip=1))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("internal error on %s: %s", request.url.path, type(exc).__name__)  # the message may hold data
        return error_response(500, "internal_error", "internal error: the service log has the error's type")


SexField = Annotated[str | None, Form(description="male or female (m/f); optional only for a DICOM with PatientSex")]
AgeField = Annotated[str | None, Form(description="the child's age: months (123) or years and months (10y3m)")]
FileField = Annotated[UploadFile, File(description="a radiograph: PNG, JPEG, TIFF, BMP, WebP; DICOM with the dicom extra")]


FORM_FIELDS = ("file", "sex", "age")


async def _single_fields(request: Request) -> None:
    """Each field of the form at most once: FastAPI takes the last of two ``sex`` or ``file`` fields
    and says nothing, so a client that sent two values got an answer for one of them."""
    form = await request.form()  # already parsed by FastAPI for the route's fields: no second read
    for name in FORM_FIELDS:
        count = len(form.getlist(name))
        if count > 1:
            raise ServeError(422, "invalid_request", f"the form holds {count} '{name}' fields; send each field once")


async def _fields(request: Request, sex: str | None, age: str | None) -> tuple[bool | None, float | None]:
    """The parsed sex and age; a form with a field twice, or a bad sex or age, is refused before the
    request takes a place in the queue or its image is read."""
    await _single_fields(request)
    male = parse_sex(sex) if sex not in (None, "") else None
    months = parse_age(age) if age not in (None, "") else None
    return male, months


async def _answer(service: Service, work: Callable[..., T], request: Request, file: UploadFile, sex: str | None,
                  age: str | None) -> T:
    """``work(estimator, image bytes, male, months)`` on the pool. The upload is read into memory only
    once the request holds a place in the queue: a request past it is answered 503 without its image
    being read (it was read whole first, up to the body limit for each request of a burst)."""
    estimator = service.ready()
    male, months = await _fields(request, sex, age)
    async with service.gate.admission():
        data = check_upload(await file.read())
        return await service.gate.call(work, estimator, data, male, months)


def _predict(estimator: BoneAgeEstimator, data: bytes, male: bool | None, age: float | None) -> Prediction:
    """The facade's own path for one image (``workers=0``: no per-request thread pool)."""
    (result,) = estimator.predict_many([data], [male], ages=[age], workers=0)
    if isinstance(result, BoneAgeError):
        raise result
    return result


def _routes(app: FastAPI, service: Service) -> None:
    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz", summary="the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="the model is loaded", responses={503: {"model": ErrorBody}})
    async def readyz() -> dict[str, str]:
        estimator = service.ready()
        return {"status": "ready", "model": estimator.card.ref}

    @app.get("/v1/model", response_model=ModelInfo, summary="the model card", responses={503: {"model": ErrorBody}})
    async def model() -> ModelInfo:
        estimator = service.ready()
        return ModelInfo(name=estimator.card.name, version=estimator.card.version, sha256=service.sha256,
                         known_release=estimator.model.known_release, runtime=estimator.runtime_name,
                         reference=estimator.reference.name, card=estimator.card)

    @app.post("/v1/predict", response_model=Prediction, summary="bone age of one radiograph", responses=ERRORS)
    async def predict(request: Request, file: FileField, sex: SexField = None, age: AgeField = None) -> Response:
        """The same JSON as ``BoneAgeEstimator().predict(...)`` for the same image bytes (``source`` is
        null: file names are not kept). The model file's sha256 is in the X-Boneage-Model-Sha256 header."""
        prediction = await _answer(service, _predict, request, file, sex, age)
        return JSONResponse(prediction.model_dump(mode="json"), headers={SHA_HEADER: service.sha256})

    @app.post("/v1/explain", response_class=Response, summary="where the model looked: a PNG heatmap",
              responses={200: {"content": {"image/png": {}}}, **ERRORS})
    async def explain(request: Request, file: FileField, sex: SexField = None, age: AgeField = None) -> Response:
        """Occlusion sensitivity over the radiograph (about 150 model runs), with the estimate above it."""
        png = await _answer(service, _heatmap, request, file, sex, age)
        return Response(png, media_type="image/png", headers={SHA_HEADER: service.sha256})

    @app.post("/v1/chart", response_class=Response, summary="the growth chart: a PNG (needs the age, extra plot)",
              responses={200: {"content": {"image/png": {}}}, 501: {"model": ErrorBody}, **ERRORS})
    async def chart(request: Request, file: FileField, sex: SexField = None, age: AgeField = None) -> Response:
        """The bone age against the reference at the child's age; 501 ``missing_dependency`` without matplotlib."""
        from boneage.chart import require_matplotlib

        service.ready()
        require_matplotlib()
        png = await _answer(service, _chart, request, file, sex, age)
        return Response(png, media_type="image/png", headers={SHA_HEADER: service.sha256})


def _heatmap(estimator: BoneAgeEstimator, data: bytes, male: bool | None, age: float | None) -> bytes:
    picture = estimator.explain(data, male, age).render(max_side=768)
    ok, encoded = cv2.imencode(".png", picture)
    if not ok:
        raise ServeError(500, "internal_error", "the heatmap could not be encoded")
    return bytes(encoded.tobytes())


def _chart(estimator: BoneAgeEstimator, data: bytes, male: bool | None, age: float | None) -> bytes:
    prediction = _predict(estimator, data, male, age)
    if prediction.comparison is None:
        raise ServeError(422, "age_required", "a growth chart needs the child's age")
    with tempfile.TemporaryDirectory(prefix="boneage-chart-") as folder:
        return estimator.plot(prediction, Path(folder) / "chart.png").read_bytes()
