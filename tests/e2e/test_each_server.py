"""What every supported server must do, each case run on each server (``web_server``):
daphne (the seed's server) and uvicorn with two worker processes on one port, as the
Procfile runs it.

The protocol's and consumers' own cases run in this process (``inprocess_server``);
these are the ones a server's handling of sockets could change: the seed route, the
multiplexed endpoint with resume across processes, session sign-in, refused origins
and bad frames.
"""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import InvalidStatus

from tests.support.clients import open_socket, recv_json, recv_through, recv_until, subscribe
from tests.support.users import session_cookie
from ws import apush

GREETING = {"msg": "heartbeat", "code": 200, "data": []}


async def test_seed_route_pushes_reach_every_socket_in_order(web_server):
    # Twelve sockets on one port (uvicorn's two processes share them): a push made
    # elsewhere reaches all through the Redis layer.
    sockets = [
        await open_socket(
            web_server.ws_url(f"/ws/heartbeat/uv-{web_server.server_name}/"), web_server.origin
        )
        for _ in range(12)
    ]
    for socket in sockets:
        assert await recv_json(socket) == GREETING
    seqs = [await apush(f"room.uv-{web_server.server_name}", {"n": n}) for n in range(3)]
    for socket in sockets:
        frames = [await recv_json(socket) for _ in seqs]
        assert [(f["msg"], f["data"], f["seq"]) for f in frames] == [
            ("success", {"n": n}, seq) for n, seq in enumerate(seqs)
        ]
    assert web_server.failures_since(0) == []
    for socket in sockets:
        await socket.close()


async def test_a_reconnecting_client_resumes_what_it_missed(web_server):
    topic = f"room.uv-resume-{web_server.server_name}"
    socket = await open_socket(web_server.ws_url("/ws/"), web_server.origin)
    subscribed = await subscribe(socket, topic)
    first = await apush(topic, {"n": 1})
    assert (await recv_json(socket))["seq"] == first
    await socket.close()

    missed = [await apush(topic, {"n": n}) for n in (2, 3)]
    again = await open_socket(web_server.ws_url("/ws/"), web_server.origin)
    request = {"op": "subscribe", "topic": topic, "since": first}
    await again.send(json.dumps({**request, "epoch": subscribed["epoch"]}))
    frames = await recv_through(
        again, lambda f: f.get("op") == "message" and f["seq"] == missed[-1]
    )
    assert frames[0]["op"] == "subscribed"
    assert frames[0]["recovered"] is True
    assert [(f["seq"], f["data"]) for f in frames[1:]] == [
        (missed[0], {"n": 2}),
        (missed[1], {"n": 3}),
    ]
    await again.close()


@pytest.mark.django_db(transaction=True)
async def test_the_session_cookie_signs_a_browser_in(web_server, alice):
    from tests.support.users import in_thread

    cookie = await in_thread(session_cookie, alice)
    socket = await open_socket(
        web_server.ws_url("/ws/"), web_server.origin, additional_headers={"Cookie": cookie}
    )
    assert (await subscribe(socket, f"user.{alice.pk}"))["op"] == "subscribed"
    anonymous = await open_socket(web_server.ws_url("/ws/"), web_server.origin)
    refused = await subscribe(anonymous, f"user.{alice.pk}")
    assert (refused["op"], refused["code"]) == ("error", 4003)
    await socket.close()
    await anonymous.close()


async def test_a_foreign_origin_is_refused_at_the_handshake(web_server):
    with pytest.raises(InvalidStatus) as refused:
        await open_socket(web_server.ws_url("/ws/"), "https://evil.example")
    assert refused.value.response.status_code == 403


async def test_a_bad_frame_gets_an_error_frame_and_the_socket_stays(web_server):
    socket = await open_socket(web_server.ws_url("/ws/"), web_server.origin)
    await socket.send("{not json")
    error = await recv_json(socket)
    assert (error["op"], error["code"]) == ("error", 4400)
    await subscribe(socket, "broadcast")
    seq = await apush("broadcast", {"still": "served"})
    assert (await recv_until(socket, lambda f: f.get("op") == "message"))["seq"] == seq
    await socket.close()
