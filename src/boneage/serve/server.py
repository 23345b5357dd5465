"""The uvicorn server ``boneage serve`` runs: it says the port it really bound (``--port 0`` lets
the system pick one), and it closes a connection that takes longer than ``--read-timeout`` to send
a request's headers, a bound uvicorn does not have (idle sockets held the service at 503 once
``--max-connections`` of them were open). Imported only with the serve extra installed."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request's headers: ``read_timeout`` seconds
    from the moment the connection opens, or its last response ends, until the request line and
    headers are complete. Data that arrives meanwhile does not move the deadline, so a client that
    sends one byte at a time (slowloris) is closed as one that sends nothing. A request whose
    headers are in is not timed: its body and the answer have their own limits (the upload's size,
    the queue). Set ``read_timeout`` through :func:`header_timeout`."""

    read_timeout: float = 30.0
    _deadline: asyncio.TimerHandle | None = None
    _upgraded = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Opened: the first request's headers are due within ``read_timeout``."""
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        """Once a request's headers are complete, its deadline is lifted."""
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

    def _watch(self) -> None:
        """Arm the deadline when the connection starts waiting for headers, lift it when they are in."""
        if not self._waiting_for_headers() or self.transport.is_closing():
            self._lift()
        elif self._deadline is None:
            self._deadline = self.loop.call_later(self.read_timeout, self._expire)

    def _lift(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        """The deadline passed with the headers still missing: close, as uvicorn's keep-alive timeout does."""
        self._deadline = None
        if self._waiting_for_headers() and not self.transport.is_closing():
            self.transport.close()


def header_timeout(seconds: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class for uvicorn's ``http`` option, with this deadline for a request's headers."""
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
