"""The two limits that keep the service up under hostile or heavy use: the request body's size,
counted while it arrives, and the number of predictions running or waiting."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import anyio
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from boneage.serve.errors import ServeError, error_response

T = TypeVar("T")


def too_large(limit: int) -> str:
    """One message for both ways an upload is found too large (``limit`` in bytes, said in MiB)."""
    return f"the upload is larger than the {limit / 2**20:g} MiB this service accepts"


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes is refused with 413 from its Content-Length,
    or, when that is absent or lies, as soon as one byte more has arrived; the rest is never read."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry: non-HTTP scopes pass through untouched."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await error_response(413, "upload_too_large", too_large(self.limit))(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # FastAPI passes an HTTPException from the form parser through
                    raise HTTPException(413, too_large(self.limit))
            return message

        await self.app(scope, counted, send)


class Gate:
    """A bounded pool shared by every request: ``running`` predictions at once on worker threads
    (the event loop never waits on one), ``waiting`` more queued; beyond that, 503 at once."""

    def __init__(self, running: int, waiting: int) -> None:
        self.capacity = running + waiting
        self.limiter = anyio.CapacityLimiter(running)
        self.admitted = 0  # touched only on the event loop's thread: no lock needed

    @asynccontextmanager
    async def admission(self) -> AsyncIterator[None]:
        """A place among the ``running + waiting`` requests for the body of the ``with``, or a 503
        :class:`ServeError` at once when all are taken. A request reads its upload into memory only
        inside it, so a burst past the queue is refused before any of its images is (it was read
        whole first, up to the body limit each). Enter it from the event loop only: its count has no lock."""
        if self.admitted >= self.capacity:
            raise ServeError(503, "overloaded", f"the service is busy ({self.capacity} requests running or queued); "
                             "try again shortly", {"Retry-After": "1"})
        self.admitted += 1
        try:
            yield
        finally:
            self.admitted -= 1

    async def call(self, func: Callable[..., T], *args: Any) -> T:
        """``func(*args)`` on a worker thread once one of the ``running`` slots is free; call it inside
        :meth:`admission`, which bounds how many wait here."""
        return await anyio.to_thread.run_sync(func, *args, limiter=self.limiter)

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        """:meth:`call` inside its own :meth:`admission`: a 503 at once when the queue is full."""
        async with self.admission():
            return await self.call(func, *args)
