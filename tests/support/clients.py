"""Real WebSocket clients (the ``websockets`` library) and how tests read frames."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.support import inprocess

FRAME_TIMEOUT_S = 10.0

# Sockets opened by the running test, closed after it even when it fails
# (see the ``close_test_sockets`` fixture), so no test leaks into the next.
OPENED: list[ClientConnection] = []


async def open_socket(url: str, origin: str | None, **kwargs: Any) -> ClientConnection:
    """Connect as a browser on ``origin`` would (the Origin header is checked).

    An ``inprocess://`` URL (``InProcessServer.ws_url``) connects to the application
    running in this process instead (tests/support/inprocess.py).
    """
    if url.startswith(f"{inprocess.SCHEME}://"):
        socket: Any = await inprocess.CommunicatorSocket.open(url, origin, **kwargs)
    else:
        socket = await connect(url, origin=origin, open_timeout=30, **kwargs)  # type: ignore[arg-type]
    OPENED.append(socket)
    return socket


async def close_opened_sockets() -> None:
    """Close the sockets this event loop opened; forget the rest."""
    loop = asyncio.get_running_loop()
    in_process = [
        s for s in OPENED if inprocess.is_in_process(s) and s.communicator.future.get_loop() is loop
    ]
    mine = [
        s
        for s in OPENED
        if not inprocess.is_in_process(s)
        and s.transport.get_extra_info("socket") is not None
        and getattr(s.transport, "_loop", loop) is loop
    ]
    OPENED.clear()
    for socket in mine:
        # A socket a test stopped reading has frames queued and never sees the server's
        # closing frame: don't wait websockets' 10 s close timeout for it at teardown.
        socket.close_timeout = 1
    await asyncio.gather(*(s.close() for s in mine + in_process), return_exceptions=True)


async def recv_json(socket: ClientConnection, timeout: float = FRAME_TIMEOUT_S) -> Any:
    return json.loads(await asyncio.wait_for(socket.recv(), timeout))


async def recv_until(
    socket: ClientConnection, predicate: Any, timeout: float = FRAME_TIMEOUT_S
) -> dict[str, Any]:
    """The first frame that satisfies ``predicate``, skipping others."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await socket.recv())
            if predicate(frame):
                return frame


async def recv_through(
    socket: ClientConnection, predicate: Any, timeout: float = FRAME_TIMEOUT_S
) -> list[dict[str, Any]]:
    """Every frame up to and including the first that satisfies ``predicate``."""
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while not frames or not predicate(frames[-1]):
            frames.append(json.loads(await socket.recv()))
    return frames


async def subscribe(socket: ClientConnection, topic: str) -> dict[str, Any]:
    """Subscribe on the multiplexed endpoint and return the ``subscribed`` frame."""
    await socket.send(json.dumps({"op": "subscribe", "topic": topic}))
    return await recv_until(
        socket,
        lambda frame: frame.get("op") in ("subscribed", "error") and frame.get("topic") == topic,
    )


async def closed_with(socket: ClientConnection, timeout: float = FRAME_TIMEOUT_S) -> int | None:
    """Read until the server closes; the close code it sent (None if it dropped the link)."""
    async with asyncio.timeout(timeout):
        with contextlib.suppress(ConnectionClosed):
            async for _ in socket:
                pass
    received = socket.protocol.close_rcvd
    return received.code if received is not None else None


async def frames_until_closed(
    socket: ClientConnection, timeout: float = FRAME_TIMEOUT_S
) -> tuple[list[Any], int | None]:
    """Every frame until the server closes, and the close code (None if dropped)."""
    frames: list[Any] = []
    async with asyncio.timeout(timeout):
        with contextlib.suppress(ConnectionClosed):
            async for text in socket:
                frames.append(json.loads(text))
    received = socket.protocol.close_rcvd
    return frames, received.code if received is not None else None


TRY_AGAIN = 4503  # ws.protocol.CloseCode.TRY_AGAIN: Redis was away, nothing was done
RETRY_BACKOFF_S = (0.1, 0.2, 0.4, 0.8)


async def subscribe_when_served(
    url: str, origin: str, topic: str, timeout: float = 60
) -> tuple[ClientConnection, dict[str, Any]]:
    """Open a socket and subscribe to ``topic`` as push.js does while Redis is away.

    An error frame ``4503`` sends the subscribe again, a close ``4503`` opens a new
    socket, each after a backoff; any other refusal fails. Returns the socket and
    its ``subscribed`` frame.
    """
    async with asyncio.timeout(timeout):
        tries = 0
        while True:
            socket = await open_socket(url, origin)
            try:
                return socket, await subscribe_until_served(socket, topic)
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                assert code == TRY_AGAIN, f"closed {code} while subscribing to {topic}"
            await asyncio.sleep(RETRY_BACKOFF_S[min(tries, len(RETRY_BACKOFF_S) - 1)])
            tries += 1


async def subscribe_until_served(socket: ClientConnection, topic: str) -> dict[str, Any]:
    """Subscribe on ``socket``, again after each error frame ``4503`` (with a backoff),
    as push.js does; the ``subscribed`` frame. Any other refusal fails."""
    tries = 0
    while True:
        answer = await subscribe(socket, topic)
        if answer["op"] == "subscribed":
            return answer
        assert answer["code"] == TRY_AGAIN, answer
        await asyncio.sleep(RETRY_BACKOFF_S[min(tries, len(RETRY_BACKOFF_S) - 1)])
        tries += 1
