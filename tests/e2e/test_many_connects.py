"""A thousand sockets at once: the layer's Redis connections must not run out."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.clients import open_socket, recv_json
from ws import apush

CLIENTS = 1000


@pytest.mark.slow
async def test_a_thousand_concurrent_connects_all_open_and_one_push_reaches_all(daphne_server):
    offset = daphne_server.log_size()
    url = daphne_server.ws_url("/ws/heartbeat/crowd/")

    opened = await asyncio.gather(
        *(open_socket(url, daphne_server.origin) for _ in range(CLIENTS)), return_exceptions=True
    )
    refused = [repr(result) for result in opened if isinstance(result, BaseException)]
    sockets = [result for result in opened if not isinstance(result, BaseException)]
    try:
        assert refused == [], f"{len(refused)} of {CLIENTS} connects failed"
        greetings = await asyncio.gather(*(recv_json(s, timeout=60) for s in sockets))
        assert sum(g["msg"] == "heartbeat" for g in greetings) == CLIENTS

        seq = await apush("room.crowd", {"to": "everyone"})
        frames = await asyncio.gather(*(recv_json(s, timeout=60) for s in sockets))
        assert sum(f["seq"] == seq and f["data"] == {"to": "everyone"} for f in frames) == CLIENTS
    finally:
        await asyncio.gather(*(s.close() for s in sockets), return_exceptions=True)
    # No "Too many connections", no "Timeout reading", no traceback.
    assert daphne_server.failures_since(offset) == []
