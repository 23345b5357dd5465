"""The uvicorn server ``boneage serve`` runs: it says the port it really bound (``--port 0`` lets
the system pick one), and it closes a connection that takes longer than ``--read-timeout`` to send
a request's headers, or whose body stalls, bounds uvicorn does not have (idle sockets held the service
at 503 once ``--max-connections`` of them were open; so did bodies that stopped half-way). Imported only
with the serve extra installed."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import h11
import uvicorn
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol

# The slowest a request body may arrive while the service is reading it, in bytes a second, averaged over
# each ``read_timeout``: 1 KiB/s (a 64 MiB upload in 18 hours) is far below any real link, and far above a
# client that sends a byte now and then to hold its connection open.
MIN_BODY_RATE = 1024


class _WatchedFlow(FlowControl):
    """uvicorn's flow control of one connection, telling the protocol each time reading pauses or resumes:
    the body's deadline runs only while the service reads (a paused socket cannot receive, whatever the client
    does), and uvicorn resumes reading when the application asks for the body (after answering a client's
    ``Expect: 100-continue``) without telling the protocol otherwise."""

    def __init__(self, transport: asyncio.Transport, changed: Callable[[], None]) -> None:
        super().__init__(transport)
        self._changed = changed

    def pause_reading(self) -> None:
        super().pause_reading()
        self._changed()

    def resume_reading(self) -> None:
        super().resume_reading()
        self._changed()


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers and a minimum pace for its body.

    Headers: ``read_timeout`` seconds from the moment the connection opens, or its last response ends,
    until the request line and headers are complete. Data that arrives meanwhile does not move the
    deadline, so a client that sends one byte at a time (slowloris) is closed as one that sends nothing.

    Body: while uvicorn reads it (not while reading is paused because the application has not taken
    what came so far, nor while a client that sent ``Expect: 100-continue`` waits for the go-ahead),
    each ``read_timeout`` must bring at least :data:`MIN_BODY_RATE` bytes a second; a body that stalls
    is closed within two ``read_timeout`` (the bytes sent with the headers do not count). Once the body
    is complete nothing is timed: the answer has its own limits (the queue). Set ``read_timeout`` through
    :func:`header_timeout`."""

    read_timeout: float = 30.0
    _deadline: asyncio.TimerHandle | None = None
    _body_deadline: asyncio.TimerHandle | None = None
    _body_bytes = 0
    _upgraded = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Opened: the first request's headers are due within ``read_timeout``."""
        super().connection_made(transport)
        self.flow = _WatchedFlow(transport, self._watch)  # before any request: every cycle gets this one
        self._watch()

    def data_received(self, data: bytes) -> None:
        """Once a request's headers are complete, its headers' deadline is lifted and its body's starts;
        the body's bytes are counted."""
        if self._body_deadline is not None:
            self._body_bytes += len(data)
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        """Answered: the next request's headers are due within ``read_timeout`` (uvicorn's own
        keep-alive timeout ends once any byte of them arrives)."""
        super().on_response_complete()
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        """Closed, by either side: no deadline is left behind."""
        self._lift()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        """A WebSocket is not an HTTP request: it is never timed (the service has none)."""
        self._lift()
        self._upgraded = True
        super().handle_websocket_upgrade(event)

    def _waiting_for_headers(self) -> bool:
        """No request under way: none yet, or the last one answered."""
        return not self._upgraded and (self.cycle is None or self.cycle.response_complete)

    def _reading_body(self) -> bool:
        """A request's body is due and the service is reading it: more is to come, reading is not paused,
        and the client is not waiting for a ``100 Continue`` before it sends the body."""
        cycle = self.cycle
        return (not self._upgraded and cycle is not None and not cycle.response_complete and cycle.more_body
                and not cycle.disconnected and not cycle.waiting_for_100_continue and not self.flow.read_paused)

    def _watch(self) -> None:
        """Arm the deadline that applies now (headers, or the body's next window) and lift the others."""
        if self.transport is None or self.transport.is_closing():
            self._lift()
            return
        if self._waiting_for_headers():
            self._lift_body()
            if self._deadline is None:
                self._deadline = self.loop.call_later(self.read_timeout, self._expire)
            return
        self._lift_headers()
        if not self._reading_body():
            self._lift_body()
        elif self._body_deadline is None:
            self._arm_body()

    def _arm_body(self) -> None:
        self._body_bytes = 0
        self._body_deadline = self.loop.call_later(self.read_timeout, self._body_window_ends)

    def _lift_headers(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _lift_body(self) -> None:
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _lift(self) -> None:
        self._lift_headers()
        self._lift_body()

    def _expire(self) -> None:
        """The deadline passed with the headers still missing: close, as uvicorn's keep-alive timeout does."""
        self._deadline = None
        if self._waiting_for_headers() and not self.transport.is_closing():
            self.transport.close()

    def _body_window_ends(self) -> None:
        """A window of ``read_timeout`` of reading the body ended: another if it brought enough, else close
        (the application then reads a disconnect, as when the client goes away)."""
        self._body_deadline = None
        if self.transport.is_closing() or not self._reading_body():
            self._watch()  # what applies now, if anything
            return
        if self._body_bytes >= MIN_BODY_RATE * self.read_timeout:
            self._arm_body()
        else:
            self.transport.close()


def header_timeout(seconds: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class for uvicorn's ``http`` option, with this deadline for a request's headers (and
    window for its body's pace)."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"read_timeout": seconds})


class AnnouncingServer(uvicorn.Server):
    """uvicorn's server, which calls ``on_listening(port)`` once it listens: with ``port=0`` only
    the bound socket knows which port the system picked."""

    def __init__(self, config: uvicorn.Config, on_listening: Callable[[int], None]) -> None:
        super().__init__(config)
        self.on_listening = on_listening

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        """uvicorn's startup (it exits on a port in use), then the port said."""
        await super().startup(sockets=sockets)
        if self.started and self.servers and self.servers[0].sockets:
            self.on_listening(int(self.servers[0].sockets[0].getsockname()[1]))
