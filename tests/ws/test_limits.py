"""Limits: subscriptions per socket, frames per second, sockets per user."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.clients import (
    closed_with,
    frames_until_closed,
    open_socket,
    recv_json,
    subscribe,
)
from tests.support.users import make_user, session_cookie
from ws import apush

# Small limits, so that each is reached in a few frames (defaults: see settings).
LIMITS = {
    "PUSH_MAX_SUBSCRIPTIONS": 5,
    "PUSH_RATE_PER_S": 10,
    "PUSH_RATE_BURST": 20,
    "PUSH_RATE_MAX_REFUSED": 20,
    "PUSH_MAX_CONNECTIONS_PER_USER": 3,
}


@pytest.fixture
def limited_server(inprocess_server, settings):
    """The application in this process, with small limits."""
    for name, value in LIMITS.items():
        setattr(settings, name, value)
    return inprocess_server


async def test_subscriptions_per_socket_are_capped_and_the_socket_stays(limited_server):
    socket = await open_socket(limited_server.ws_url("/ws/"), limited_server.origin)
    limit = LIMITS["PUSH_MAX_SUBSCRIPTIONS"]
    for n in range(limit):
        await socket.send(json.dumps({"op": "subscribe", "topic": f"room.cap{n}"}))
    for _ in range(limit):
        assert (await recv_json(socket))["op"] == "subscribed"
    refused = await subscribe(socket, "room.one-too-many")
    assert (refused["op"], refused["code"]) == ("error", 4429)
    assert f"max {limit}" in refused["msg"]
    seq = await apush("room.cap0", "still subscribed")
    assert (await recv_json(socket))["seq"] == seq
    await socket.close()


async def test_a_flooding_socket_is_rate_limited_then_closed_and_others_are_served(limited_server):
    bystander = await open_socket(
        limited_server.ws_url("/ws/heartbeat/flood/"), limited_server.origin
    )
    await recv_json(bystander)
    flooder = await open_socket(limited_server.ws_url("/ws/"), limited_server.origin)
    for _ in range(500):
        await flooder.send('{"op": "ping"}')

    frames, code = await frames_until_closed(flooder)
    assert code == 4429
    pongs = sum(frame.get("op") == "pong" for frame in frames)
    limited = sum(frame.get("code") == 4429 for frame in frames)
    # The burst and what refilled while the frames came in are served; the rest are not.
    assert LIMITS["PUSH_RATE_BURST"] <= pongs < 500
    assert limited == LIMITS["PUSH_RATE_MAX_REFUSED"] - 1

    seq = await apush("room.flood", "others are served")
    assert (await recv_json(bystander))["seq"] == seq
    await bystander.close()


@pytest.fixture
def carol_cookie() -> str:
    return session_cookie(make_user("carol"))


@pytest.mark.django_db(transaction=True)
async def test_sockets_per_user_are_capped_across_the_server(limited_server, carol_cookie):
    limit = LIMITS["PUSH_MAX_CONNECTIONS_PER_USER"]
    headers = {"Cookie": carol_cookie}
    url = limited_server.ws_url("/ws/")

    async def ping(socket: Any) -> Any:
        await socket.send('{"op": "ping"}')
        return await recv_json(socket)

    sockets = [
        await open_socket(url, limited_server.origin, additional_headers=headers)
        for _ in range(limit)
    ]
    assert [await ping(s) for s in sockets] == [{"op": "pong"}] * limit

    extra = await open_socket(url, limited_server.origin, additional_headers=headers)
    refused = await recv_json(extra)
    assert refused["code"] == 4429
    assert await closed_with(extra) == 4429

    # Closing one frees its place.
    await sockets.pop().close()
    retry = await open_socket(url, limited_server.origin, additional_headers=headers)
    assert await ping(retry) == {"op": "pong"}
    for socket in [*sockets, retry]:
        await socket.close()
