"""Every error the service answers, as JSON ``{"error": {"code", "message"}}`` with a stable code.

The library's typed errors map to a status and a code here, in one table, so a client can switch
on ``code`` and the documentation (docs/serve.md) can list them all. Nothing else (a traceback,
an internal path) ever reaches a client.
"""

from __future__ import annotations

from pydantic import BaseModel
from starlette.responses import JSONResponse

from boneage.errors import (
    AgeError,
    BoneAgeError,
    ImageReadError,
    ImageTooLargeError,
    ImageTooSmallError,
    MissingDependencyError,
    ModelError,
    NotARadiographError,
    PreprocessError,
    SexError,
    UnsupportedImageError,
)


class ErrorDetail(BaseModel):
    """``code`` is stable, for clients to switch on; ``message`` is for people and may change."""

    code: str
    message: str


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


class ServeError(Exception):
    """An error the service raises itself (overload, upload too large, not ready, ...): the HTTP
    ``status``, the stable ``code``, and ``headers`` such as Retry-After for the response."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


# Most specific first: the first class an error is an instance of wins.
LIBRARY_ERRORS: list[tuple[type[BoneAgeError], int, str]] = [
    (SexError, 422, "invalid_sex"),
    (AgeError, 422, "invalid_age"),
    (NotARadiographError, 422, "not_a_radiograph"),
    (ImageTooSmallError, 422, "image_too_small"),
    (ImageTooLargeError, 413, "image_too_large"),
    (PreprocessError, 422, "preprocessing_failed"),
    (UnsupportedImageError, 415, "unsupported_image"),
    (ImageReadError, 400, "unreadable_image"),
    (MissingDependencyError, 501, "missing_dependency"),
    (ModelError, 500, "model_error"),
]


def library_error(exc: BoneAgeError) -> ServeError:
    """The status and code for one of the library's errors; its message is the library's own,
    which names no file (uploads are read as bytes) and echoes no date."""
    for kind, status, code in LIBRARY_ERRORS:
        if isinstance(exc, kind):
            return ServeError(status, code, str(exc))
    return ServeError(400, "invalid_input", str(exc))


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The one place an error body is made."""
    return JSONResponse(ErrorBody(error=ErrorDetail(code=code, message=message)).model_dump(), status_code=status,
                        headers=headers)
