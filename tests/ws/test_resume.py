"""Resume: a client that says where it was gets exactly what it missed, or a reset."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tests.support.clients import open_socket, recv_json
from ws import apush, keys, topics


async def subscribe_from(
    server: Any, topic: str, since: int | None = None, epoch: str | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]], Any]:
    """A new socket subscribing at (since, epoch): the subscribed frame, what was sent
    before a following ping's pong (the replay or snapshot), and the socket."""
    socket = await open_socket(server.ws_url("/ws/"), server.origin)
    frame: dict[str, Any] = {"op": "subscribe", "topic": topic}
    if since is not None:
        frame.update(since=since, epoch=epoch)
    await socket.send(json.dumps(frame))
    await socket.send('{"op": "ping"}')
    subscribed = await recv_json(socket)
    assert subscribed["op"] == "subscribed", subscribed
    sent = []
    while (reply := await recv_json(socket))["op"] != "pong":
        sent.append(reply)
    return subscribed, sent, socket


async def pushes(topic: str, count: int) -> list[int]:
    return [await apush(topic, {"n": n}) for n in range(count)]


async def test_an_empty_topic(inprocess_server):
    subscribed, sent, _ = await subscribe_from(inprocess_server, "room.rs-empty")
    assert (subscribed["seq"], subscribed["recovered"], sent) == (0, False, [])
    again, sent, _ = await subscribe_from(inprocess_server, "room.rs-empty", 0, subscribed["epoch"])
    assert (again["seq"], again["recovered"], sent) == (0, True, [])


async def test_behind_by_two_recovers_two_and_up_to_date_recovers_none(inprocess_server):
    first, _, _ = await subscribe_from(inprocess_server, "room.rs-two")
    missed = await pushes("room.rs-two", 2)

    behind, sent, _ = await subscribe_from(
        inprocess_server, "room.rs-two", first["seq"], first["epoch"]
    )
    assert behind["recovered"] is True
    assert [(f["seq"], f["data"]) for f in sent] == [(missed[0], {"n": 0}), (missed[1], {"n": 1})]
    assert not any(f.get("reset") for f in sent)

    current, sent, _ = await subscribe_from(
        inprocess_server, "room.rs-two", missed[1], first["epoch"]
    )
    assert (current["recovered"], sent) == (True, [])


async def test_behind_beyond_retention_is_reset(inprocess_server, settings):
    settings.PUSH_HISTORY_SIZE = 5  # the publisher (this process) keeps 5
    first, _, _ = await subscribe_from(inprocess_server, "room.rs-retention")
    await pushes("room.rs-retention", 10)
    behind, sent, _ = await subscribe_from(
        inprocess_server, "room.rs-retention", first["seq"], first["epoch"]
    )
    assert (behind["recovered"], sent) == (False, [])  # not a partial replay of the last 5


async def test_since_in_the_future_or_another_epoch_is_reset(inprocess_server):
    first, _, _ = await subscribe_from(inprocess_server, "room.rs-odd")
    await pushes("room.rs-odd", 3)
    future, sent, _ = await subscribe_from(inprocess_server, "room.rs-odd", 99, first["epoch"])
    assert (future["recovered"], sent) == (False, [])
    other, sent, _ = await subscribe_from(inprocess_server, "room.rs-odd", first["seq"], "not-it")
    assert (other["recovered"], sent) == (False, [])


async def test_a_gap_larger_than_the_replay_limit_is_reset(
    inprocess_server, settings, redis_client
):
    settings.PUSH_HISTORY_SIZE = 500
    first, _, _ = await subscribe_from(inprocess_server, "room.rs-gap")
    await pushes("room.rs-gap", settings.PUSH_REPLAY_LIMIT + 1)
    history = keys.topic("room.rs-gap").history
    assert redis_client.xlen(history) == settings.PUSH_REPLAY_LIMIT + 1  # all kept
    behind, sent, _ = await subscribe_from(
        inprocess_server, "room.rs-gap", first["seq"], first["epoch"]
    )
    assert (behind["recovered"], sent) == (False, [])


async def test_a_topic_can_keep_a_history_of_its_own_size(inprocess_server, redis_client):
    topics.declare("room.rs-own", history_size=3)  # in the publishing process (this one)
    first, _, _ = await subscribe_from(inprocess_server, "room.rs-own")
    seqs = await pushes("room.rs-own", 5)
    assert redis_client.xlen(keys.topic("room.rs-own").history) == 3
    far, sent, _ = await subscribe_from(
        inprocess_server, "room.rs-own", first["seq"], first["epoch"]
    )
    assert (far["recovered"], sent) == (False, [])
    near, sent, _ = await subscribe_from(inprocess_server, "room.rs-own", seqs[1], first["epoch"])
    assert near["recovered"] is True
    assert [f["seq"] for f in sent] == seqs[2:]


def test_call_signalling_is_kept_a_minute_and_others_as_configured(settings):
    assert topics.resolve("call.7").retention == topics.Retention(
        size=settings.PUSH_HISTORY_SIZE, ttl_s=60
    )
    assert topics.resolve("chat.lobby").retention.ttl_s == settings.PUSH_HISTORY_TTL_S


async def test_expired_history_is_reset(inprocess_server, settings):
    settings.PUSH_HISTORY_TTL_S = 1  # nothing older than a second is replayed
    first, _, _ = await subscribe_from(inprocess_server, "room.rs-expired")
    pushed_at = time.monotonic()
    await pushes("room.rs-expired", 2)
    # The passage of time is what is tested here: the entries must be over 1 s old.
    await asyncio.sleep(max(0.0, 1.2 - (time.monotonic() - pushed_at)))
    late, sent, _ = await subscribe_from(
        inprocess_server, "room.rs-expired", first["seq"], first["epoch"]
    )
    assert (late["recovered"], sent) == (False, [])


async def test_a_state_like_topic_gives_new_and_reset_subscribers_a_snapshot(inprocess_server):
    seq = await apush("dashboard.clock", {"server_time": "snapshot", "uptime_s": 1}, msg="clock")
    fresh, sent, _ = await subscribe_from(inprocess_server, "dashboard.clock")
    assert fresh["recovered"] is False
    assert [(f["seq"], f["reset"], f["data"]["server_time"]) for f in sent] == [
        (seq, True, "snapshot")
    ]
    other, sent, _ = await subscribe_from(inprocess_server, "dashboard.clock", 1, "not-it")
    assert other["recovered"] is False
    assert [f["seq"] for f in sent] == [seq]


async def test_disconnect_push_50_reconnect_gets_exactly_those_50_then_live(inprocess_server):
    first, _, socket = await subscribe_from(inprocess_server, "room.rs-fifty")
    await socket.close()
    missed = await pushes("room.rs-fifty", 50)

    back, sent, socket = await subscribe_from(
        inprocess_server, "room.rs-fifty", first["seq"], first["epoch"]
    )
    assert back["recovered"] is True
    assert [f["seq"] for f in sent] == missed
    assert [f["data"]["n"] for f in sent] == list(range(50))
    live = await apush("room.rs-fifty", "live")
    assert (await recv_json(socket))["seq"] == live  # no duplicate, no gap


async def test_resuming_while_pushes_continue_gives_no_gap_and_no_duplicate(inprocess_server):
    first, _, socket = await subscribe_from(inprocess_server, "room.rs-race")
    await socket.close()
    await pushes("room.rs-race", 20)

    async def keep_pushing() -> list[int]:
        return [await apush("room.rs-race", {"during": n}) for n in range(200)]

    pusher = asyncio.create_task(keep_pushing())
    back, sent, socket = await subscribe_from(
        inprocess_server, "room.rs-race", first["seq"], first["epoch"]
    )
    during = await pusher
    seen = [f["seq"] for f in sent]
    while not seen or seen[-1] < during[-1]:
        seen.append((await recv_json(socket))["seq"])
    assert back["recovered"] is True
    assert seen == list(range(first["seq"] + 1, during[-1] + 1))
