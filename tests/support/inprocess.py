"""Sockets served in the test's own process: Channels' ``WebsocketCommunicator``.

The project's ASGI application (origin check, sessions, routes, consumers) runs in
the test's event loop over the real channel layer and the real Redis; only the
TCP connection and the server process are left out. A test written against a
server (``server.ws_url(path)``, ``server.origin``, ``open_socket``) runs here
unchanged: ``open_socket`` hands an ``inprocess://`` URL to ``CommunicatorSocket``,
which answers ``send``, ``recv`` and ``close`` as a ``websockets`` client does,
raising the same exceptions for a refused handshake or a closed socket.

Each in-process server gives its test a Redis key prefix of its own
(``PUSH_KEY_PREFIX``), so no test sees what an earlier one left in Redis, and
keeps what this process logs while it serves, read as a server's log is
(``log_size``, ``log_since``, ``failures_since``).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from channels.testing import WebsocketCommunicator
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from websockets.frames import Close
from websockets.http11 import Response

SCHEME = "inprocess"
HOST = "127.0.0.1"
# Longer than any test waits: a test bounds its own reads (asyncio.timeout), and the
# communicator cancels the application when its own timeout runs out.
NO_TIMEOUT_S = 3600.0
CONNECT_TIMEOUT_S = 10.0


def new_key_prefix() -> str:
    """A Redis key prefix no other test uses."""
    return f"test-{secrets.token_hex(6)}"


class LogCapture(logging.Handler):
    """What this process logs, one formatted line (with any traceback) per record."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.text = ""

    def emit(self, record: logging.LogRecord) -> None:
        self.text += self.format(record) + "\n"


@dataclass
class InProcessServer:
    """Stands where a server process does, for tests that cross no process."""

    key_prefix: str
    name: str = "in-process"
    origin: str = f"http://{HOST}"
    log: LogCapture = field(default_factory=LogCapture)

    def ws_url(self, path: str) -> str:
        return f"{SCHEME}://{HOST}{path}"

    def log_text(self) -> str:
        return self.log.text

    def log_size(self) -> int:
        return len(self.log.text)

    def log_since(self, offset: int) -> str:
        return self.log.text[offset:]

    def failures_since(self, offset: int) -> list[str]:
        """Log lines since ``offset`` that a healthy server never writes."""
        from tests.support.processes import LOG_FAILURES

        return [line for line in self.log_since(offset).splitlines() if LOG_FAILURES.search(line)]


class CommunicatorSocket:
    """One client socket on the in-process application, shaped like a ``websockets``
    ``ClientConnection`` for what the tests use."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.communicator = communicator
        self.close_code: int | None = None
        self.close_rcvd: Close | None = None  # the server's close, as websockets keeps it
        self.close_timeout = 1.0

    @property
    def protocol(self) -> CommunicatorSocket:
        """Where websockets keeps ``close_rcvd``: here, the socket itself."""
        return self

    @classmethod
    async def open(
        cls, url: str, origin: str | None, additional_headers: dict[str, str] | None = None
    ) -> CommunicatorSocket:
        """Connect as ``open_socket`` does; a refused handshake raises ``InvalidStatus`` 403."""
        from project.asgi import application

        parts = urlsplit(url)
        headers = [(b"host", parts.netloc.encode())]
        if origin is not None:
            headers.append((b"origin", origin.encode()))
        for name, value in (additional_headers or {}).items():
            headers.append((name.lower().encode(), value.encode()))
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        communicator = WebsocketCommunicator(application, path, headers=headers)
        communicator.scope.update(client=(HOST, 40000), server=(HOST, 80), scheme="ws")
        accepted, _ = await communicator.connect(timeout=CONNECT_TIMEOUT_S)
        if not accepted:
            await communicator.wait(timeout=CONNECT_TIMEOUT_S)
            raise InvalidStatus(Response(403, "Forbidden", Headers()))
        return cls(communicator)

    async def send(self, message: str | bytes) -> None:
        self._raise_if_closed()
        if isinstance(message, bytes):
            await self.communicator.send_to(bytes_data=message)
        else:
            await self.communicator.send_to(text_data=message)

    async def recv(self) -> str | bytes:
        """The next frame the server sent; ``ConnectionClosed`` once it closed."""
        self._raise_if_closed()
        event = await self.communicator.receive_output(timeout=NO_TIMEOUT_S)
        if event["type"] == "websocket.close":
            self.close_code = event.get("code", 1000)
            self.close_rcvd = Close(self.close_code, event.get("reason") or "")
            self._raise_if_closed()
        return event.get("text") if event.get("text") is not None else event["bytes"]

    async def close(self) -> None:
        """Close from the client's side and let the consumer finish."""
        if self.close_code is None:
            self.close_code = 1000
            await self.communicator.send_input({"type": "websocket.disconnect", "code": 1000})
        await self.communicator.wait(timeout=self.close_timeout)

    def _raise_if_closed(self) -> None:
        if self.close_code is None:
            return
        close = Close(self.close_code, "")
        if self.close_code in (1000, 1001):
            raise ConnectionClosedOK(close, None)
        raise ConnectionClosedError(close, None)

    def __aiter__(self) -> CommunicatorSocket:
        return self

    async def __anext__(self) -> str | bytes:
        try:
            return await self.recv()
        except (ConnectionClosedOK, ConnectionClosedError):
            raise StopAsyncIteration from None


def is_in_process(socket: Any) -> bool:
    return isinstance(socket, CommunicatorSocket)
