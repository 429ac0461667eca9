"""The seed route ``heartbeat/<room>/``: its cases in this process, the handshake's
refusals and the pages on a real daphne."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.clients import open_socket, recv_json
from ws import apush

GREETING = {"msg": "heartbeat", "code": 200, "data": []}


async def test_greeting_reaches_only_the_connecting_client(inprocess_server):
    first = await open_socket(
        inprocess_server.ws_url("/ws/heartbeat/greet/"), inprocess_server.origin
    )
    assert await recv_json(first) == GREETING

    second = await open_socket(
        inprocess_server.ws_url("/heartbeat/greet/"), inprocess_server.origin
    )
    assert await recv_json(second) == GREETING

    # The second connect greeted nobody else: the next frame the first client
    # gets is this push, not a second greeting.
    seq = await apush("room.greet", {"after": "second connect"})
    assert await recv_json(first) == {
        "msg": "success",
        "code": 200,
        "data": {"after": "second connect"},
        "seq": seq,
    }
    assert (await recv_json(second))["seq"] == seq
    await first.close()
    await second.close()


async def test_send_message_reaches_a_seed_client_in_the_seed_envelope(inprocess_server):
    from ws import SendMessage

    socket = await open_socket(
        inprocess_server.ws_url("/ws/heartbeat/lobby/"), inprocess_server.origin
    )
    assert await recv_json(socket) == GREETING

    await asyncio.to_thread(SendMessage("lobby").send, {"chat_type": "chat_data", "n": 1})
    await SendMessage("lobby").send({"msg": "alert", "code": 500, "data": ["disk"]})

    one, two = await recv_json(socket), await recv_json(socket)
    assert {k: one[k] for k in ("msg", "code", "data")} == {
        "msg": "success",
        "code": 200,
        "data": {"n": 1},
    }
    assert {k: two[k] for k in ("msg", "code", "data")} == {
        "msg": "alert",
        "code": 500,
        "data": ["disk"],
    }
    assert two["seq"] == one["seq"] + 1
    await socket.close()


async def test_code_that_sends_the_seeds_own_event_still_reaches_seed_clients(inprocess_server):
    from channels.layers import get_channel_layer

    socket = await open_socket(
        inprocess_server.ws_url("/ws/heartbeat/legacy/"), inprocess_server.origin
    )
    await recv_json(socket)
    await get_channel_layer().group_send(
        "chat_legacy", {"type": "chat_data", "data": {"msg": "old", "code": 200, "data": [1]}}
    )
    assert await recv_json(socket) == {"msg": "old", "code": 200, "data": [1]}
    await socket.close()


@pytest.mark.django_db(transaction=True)  # whether the room takes messages
async def test_client_frames_get_an_answer_and_the_socket_stays(inprocess_server):
    socket = await open_socket(
        inprocess_server.ws_url("/ws/heartbeat/talk/"), inprocess_server.origin
    )
    await recv_json(socket)

    await socket.send("not json")
    assert (await recv_json(socket))["code"] == 4400
    await socket.send(json.dumps({"message": "hi"}))
    refused = await recv_json(socket)
    assert refused["code"] == 4003
    assert "does not accept client messages" in refused["msg"]

    seq = await apush("room.talk", "still here")
    assert (await recv_json(socket))["seq"] == seq
    await socket.close()


async def test_an_invalid_room_name_is_answered_and_closed(inprocess_server):
    socket = await open_socket(
        inprocess_server.ws_url("/ws/heartbeat/caf%C3%A9/"), inprocess_server.origin
    )
    refused = await recv_json(socket)
    assert refused["code"] == 4400
    with pytest.raises(ConnectionClosed) as closed:
        await socket.recv()
    assert closed.value.rcvd.code == 4400


@pytest.mark.parametrize(
    "path", ["/ws/heartbeat/origin/", "/ws/"], ids=["seed route", "multiplexed"]
)
async def test_a_wrong_origin_is_refused_at_the_handshake(daphne_server, path):
    with pytest.raises(InvalidStatus) as refused:
        await open_socket(daphne_server.ws_url(path), "http://evil.example")
    assert refused.value.response.status_code == 403


async def test_an_unknown_path_is_refused_without_a_traceback(daphne_server):
    offset = daphne_server.log_size()
    with pytest.raises(InvalidStatus) as refused:
        await open_socket(daphne_server.ws_url("/nowhere/"), daphne_server.origin)
    assert refused.value.response.status_code == 403
    socket = await open_socket(daphne_server.ws_url("/ws/heartbeat/after/"), daphne_server.origin)
    assert await recv_json(socket) == GREETING
    await socket.close()
    assert daphne_server.failures_since(offset) == []


def test_the_home_page_and_admin_assets_are_served_by_daphne(daphne_server):
    import urllib.request

    with urllib.request.urlopen(daphne_server.http_url("/")) as page:  # noqa: S310
        assert "dashboard.clock" in page.read().decode()
    css = daphne_server.http_url("/static/admin/css/base.css")
    with urllib.request.urlopen(css) as stylesheet:  # noqa: S310
        assert stylesheet.status == 200
        assert stylesheet.headers["Content-Type"].startswith("text/css")
