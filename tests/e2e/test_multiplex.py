"""The multiplexed endpoint ``ws/``: its cases in this process, and those that cross
processes (a push from a command) or depend on the server (daphne's frame limit) on a
real daphne."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.exceptions import ConnectionClosed

from tests.support.clients import (
    closed_with,
    open_socket,
    recv_json,
    recv_through,
    recv_until,
    subscribe,
)
from tests.support.processes import manage
from ws import apush, keys


async def test_subscribe_ping_push_unsubscribe(inprocess_server):
    socket = await open_socket(inprocess_server.ws_url("/ws/"), inprocess_server.origin)
    subscribed = await subscribe(socket, "room.mux-basic")
    assert subscribed["op"] == "subscribed"
    assert subscribed["recovered"] is False
    assert isinstance(subscribed["epoch"], str)
    assert subscribed["epoch"]

    await socket.send(json.dumps({"op": "ping"}))
    assert await recv_json(socket) == {"op": "pong"}

    seq = await apush("room.mux-basic", {"n": 1}, msg="update", code=201)
    assert seq == subscribed["seq"] + 1
    assert await recv_json(socket) == {
        "op": "message",
        "topic": "room.mux-basic",
        "seq": seq,
        "msg": "update",
        "code": 201,
        "data": {"n": 1},
    }

    await socket.send(json.dumps({"op": "unsubscribe", "topic": "room.mux-basic"}))
    assert await recv_json(socket) == {"op": "unsubscribed", "topic": "room.mux-basic"}
    # After unsubscribing, the next frame is the pong, not the push made before it.
    await apush("room.mux-basic", {"n": 2})
    await socket.send(json.dumps({"op": "ping"}))
    assert await recv_json(socket) == {"op": "pong"}
    await socket.close()


async def test_push_from_another_process_reaches_both_endpoints_with_rising_seq(
    daphne_server, child_env
):
    multiplexed = await open_socket(daphne_server.ws_url("/ws/"), daphne_server.origin)
    start = (await subscribe(multiplexed, "room.shell"))["seq"]
    seed = await open_socket(daphne_server.ws_url("/ws/heartbeat/shell/"), daphne_server.origin)
    await recv_json(seed)  # greeting

    for n in range(3):
        result = await asyncio.to_thread(
            manage, ["push", "room.shell", json.dumps({"n": n})], child_env
        )
        assert result.returncode == 0, result.stderr
        assert f"as seq {start + n + 1}" in result.stdout

    received = [await recv_json(multiplexed) for _ in range(3)]
    assert [frame["seq"] for frame in received] == [start + 1, start + 2, start + 3]
    assert [frame["data"] for frame in received] == [{"n": 0}, {"n": 1}, {"n": 2}]
    seed_frames = [await recv_json(seed) for _ in range(3)]
    assert [frame["seq"] for frame in seed_frames] == [start + 1, start + 2, start + 3]
    assert seed_frames[0] == {"msg": "success", "code": 200, "data": {"n": 0}, "seq": start + 1}
    await multiplexed.close()
    await seed.close()


BAD_FRAMES = [
    ("not json", "{nope", 4400, "not valid JSON"),
    ("a JSON array", "[1, 2]", 4400, "must be a JSON object"),
    ("no op", json.dumps({"topic": "broadcast"}), 4400, "'op'"),
    ("an unknown op", json.dumps({"op": "explode"}), 4400, "unknown op"),
    ("a missing topic", json.dumps({"op": "subscribe"}), 4400, "'topic'"),
    ("an unknown topic", json.dumps({"op": "subscribe", "topic": "nope.x"}), 4400, "no topic"),
    ("a negative since", '{"op":"subscribe","topic":"broadcast","since":-1}', 4400, "since"),
    ("NaN", '{"op": "ping", "x": NaN}', 4400, "not JSON"),
    ("deep nesting", "[" * 100_000 + "]" * 100_000, 1009, "larger than"),
    ("a 1 MB frame", json.dumps({"op": "ping", "pad": "x" * 1_000_000}), 1009, "larger than"),
    ("publishing", json.dumps({"op": "publish", "topic": "broadcast", "data": 1}), 4003, "publish"),
    ("another user's topic", json.dumps({"op": "subscribe", "topic": "user.1"}), 4003, "subscribe"),
]


@pytest.mark.parametrize(
    ("frame", "code", "reason"),
    [case[1:] for case in BAD_FRAMES],
    ids=[case[0] for case in BAD_FRAMES],
)
async def test_a_bad_frame_gets_an_error_frame_and_others_keep_receiving(
    inprocess_server, frame, code, reason
):
    bystander = await open_socket(inprocess_server.ws_url("/ws/"), inprocess_server.origin)
    await subscribe(bystander, "broadcast")
    offender = await open_socket(inprocess_server.ws_url("/ws/"), inprocess_server.origin)
    offset = inprocess_server.log_size()

    await offender.send(frame)
    error = await recv_json(offender)
    assert error["op"] == "error"
    assert error["code"] == code
    assert reason in error["msg"]

    # The offender's socket is still served, and so is everyone else.
    await offender.send(json.dumps({"op": "ping"}))
    assert await recv_json(offender) == {"op": "pong"}
    seq = await apush("broadcast", {"still": "served"})
    assert (await recv_until(bystander, lambda f: f.get("op") == "message"))["seq"] == seq
    assert inprocess_server.failures_since(offset) == []
    await offender.close()
    await bystander.close()


async def test_binary_frames_are_refused(inprocess_server):
    socket = await open_socket(inprocess_server.ws_url("/ws/"), inprocess_server.origin)
    await socket.send(b"\x00\x01")
    error = await recv_json(socket)
    assert (error["code"], error["msg"]) == (4400, "binary frames are not supported")
    await socket.close()


async def test_a_client_that_keeps_sending_bad_frames_is_closed_4400(inprocess_server, settings):
    socket = await open_socket(inprocess_server.ws_url("/ws/"), inprocess_server.origin)
    for _ in range(settings.PUSH_MAX_BAD_FRAMES):
        await socket.send("{")
    assert await closed_with(socket) == 4400


async def test_a_frame_over_daphnes_limit_drops_that_socket_only(daphne_server):
    """Above daphne's 1 MiB, autobahn fails the connection by dropping it (1006)."""
    bystander = await open_socket(daphne_server.ws_url("/ws/heartbeat/big/"), daphne_server.origin)
    await recv_json(bystander)
    offender = await open_socket(daphne_server.ws_url("/ws/"), daphne_server.origin, max_size=None)

    async def send_too_much_then_read() -> None:
        await offender.send("x" * (2 * 1024 * 1024))
        await offender.recv()

    with pytest.raises(ConnectionClosed) as closed:  # while sending, or just after
        await send_too_much_then_read()
    assert closed.value.rcvd is None  # no close frame: the TCP connection was dropped

    seq = await apush("room.big", "fine")
    assert (await recv_json(bystander))["seq"] == seq
    await bystander.close()


async def test_resubscribing_answers_where_the_socket_stands(inprocess_server):
    socket = await open_socket(inprocess_server.ws_url("/ws/"), inprocess_server.origin)
    first = await subscribe(socket, "room.mux-again")
    seq = await apush("room.mux-again", "one")
    assert (await recv_json(socket))["seq"] == seq

    again = await subscribe(socket, "room.mux-again")
    assert (again["seq"], again["epoch"]) == (seq, first["epoch"])
    later = await apush("room.mux-again", "two")
    assert (await recv_json(socket))["seq"] == later  # delivered once, not skipped
    await socket.close()


async def test_a_lost_topic_history_moves_subscribers_to_the_new_epoch(
    inprocess_server, redis_client
):
    socket = await open_socket(inprocess_server.ws_url("/ws/"), inprocess_server.origin)
    first = await subscribe(socket, "room.mux-flushed")
    for n in range(3):
        await apush("room.mux-flushed", n)
    for _ in range(3):
        await recv_json(socket)

    # Redis loses the topic (as a flush or an empty restart would); seq starts over.
    flushed = keys.topic("room.mux-flushed")
    redis_client.delete(flushed.meta, flushed.history)
    assert await apush("room.mux-flushed", "after the loss") == 1
    assert await apush("room.mux-flushed", "and after") == 2

    # The socket is told it stands in a new history, which is replayed from its start.
    told = await recv_json(socket)
    assert told["op"] == "subscribed"
    assert told["epoch"] != first["epoch"]
    assert told["recovered"] is True
    frames = await recv_through(socket, lambda frame: frame.get("data") == "and after")
    messages = [(f["seq"], f["data"]) for f in frames if f["op"] == "message"]
    assert messages == [(1, "after the loss"), (2, "and after")]
    assert await apush("room.mux-flushed", "live") == 3
    assert (await recv_json(socket))["data"] == "live"
