"""A socket whose queue overflows is told to catch up, and misses nothing.

A server of its own with a tiny ``PUSH_CHANNEL_CAPACITY``: a burst of pushes
arrives from Redis faster than the consumer relays it, so the layer drops
messages past capacity, counts them, and the consumer replays them from the
topic's history.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request

import pytest

from tests.support.clients import open_socket, subscribe
from tests.support.processes import DaphneServer, WebServer
from ws import apush

BURST = 60  # within PUSH_HISTORY_SIZE and PUSH_REPLAY_LIMIT (100): replayable


@pytest.fixture
def small_capacity_server(server_factory) -> WebServer:
    return server_factory.start("daphne", PUSH_CHANNEL_CAPACITY="2")


def dropped_total(server: DaphneServer) -> int:
    url = server.http_url("/ws/metrics")
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own server
        text = response.read().decode()
    return int(re.search(r"^push_messages_dropped_total (\d+)$", text, re.M).group(1))


async def test_an_overflowing_socket_catches_up_in_order(small_capacity_server):
    server = small_capacity_server
    socket = await open_socket(server.ws_url("/ws/"), server.origin)
    await subscribe(socket, "room.capacity")
    dropped_before = await asyncio.to_thread(dropped_total, server)

    seqs = await asyncio.gather(*(apush("room.capacity", n) for n in range(BURST)))

    received: list[int] = []
    async with asyncio.timeout(30):
        while len(received) < BURST:
            frame = json.loads(await socket.recv())
            if frame["op"] == "message":
                received.append(frame["seq"])
    assert received == sorted(seqs)  # every push once, in order
    assert await asyncio.to_thread(dropped_total, server) > dropped_before
    assert "over capacity" in server.log_text()
