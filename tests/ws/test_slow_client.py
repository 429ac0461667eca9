"""A client that stops reading is closed, not buffered for without bound.

daphne gives an ASGI app no back-pressure (``send`` never waits), so the bound
is daphne's keepalive: a client that does not read does not answer pings, and
daphne drops it ``--ping-interval`` + ``--ping-timeout`` seconds later
(20 + 30 s by default). This test shortens both.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time

import pytest

from tests.support.clients import open_socket, recv_json
from tests.support.processes import DaphneServer
from ws import push


@pytest.fixture
def keepalive_server(server_factory):
    return server_factory.start(
        "daphne", extra_args=("--ping-interval", "1", "--ping-timeout", "2")
    )


def masked_text_frame(text: str) -> bytes:
    payload, mask = text.encode(), os.urandom(4)
    assert len(payload) < 126
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


def subscribe_then_stop_reading(server: DaphneServer, topic: str) -> socket.socket:
    """A raw client that subscribes, then never reads again (nor answers pings)."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    raw.sendall(
        (
            f"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {server.origin}\r\n\r\n"
        ).encode()
    )
    received = b""
    while b"\r\n\r\n" not in received:
        received += raw.recv(4096)
    assert received.startswith(b"HTTP/1.1 101"), received
    raw.sendall(masked_text_frame(f'{{"op":"subscribe","topic":"{topic}"}}'))
    while b'"subscribed"' not in received:
        chunk = raw.recv(4096)
        assert chunk, "the server closed the connection"
        received += chunk
    return raw


def padded_push(i: int) -> int:
    return push("room.slow", {"i": i, "pad": "x" * 10_000})


async def bystander_gets_every_push(server: DaphneServer, count: int) -> None:
    bystander = await open_socket(server.ws_url("/ws/heartbeat/slow/"), server.origin)
    await recv_json(bystander)
    seqs = [await asyncio.to_thread(padded_push, i) for i in range(count)]
    got = [await recv_json(bystander) for _ in seqs]
    assert [frame["seq"] for frame in got] == seqs
    await bystander.close()


def test_a_client_that_stops_reading_is_dropped_and_others_are_served(keepalive_server):
    raw = subscribe_then_stop_reading(keepalive_server, "room.slow")
    port = raw.getsockname()[1]

    # 2 MB pushed: far more than the stalled client's socket buffers hold.
    asyncio.run(bystander_gets_every_push(keepalive_server, 200))

    def dropped() -> bool:
        return any(
            f"127.0.0.1:{port} " in line and "WSDISCONNECT" in line
            for line in keepalive_server.log_text().splitlines()
        )

    deadline = time.monotonic() + 20
    while not dropped():
        assert time.monotonic() < deadline, "daphne kept a client that stopped reading"
        time.sleep(0.2)
    raw.close()
