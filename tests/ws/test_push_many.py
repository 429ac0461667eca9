"""Pushing a batch: numbered, stored and published together, in order, keys kept."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.clients import open_socket, recv_through, recv_until, subscribe
from ws import PushMessage, apush, apush_many, keys, push_many, topics
from ws.store import BATCH_COMMAND_MAX


async def messages(socket: Any, count: int) -> list[tuple[str, int, Any]]:
    """The next ``count`` messages: (topic, seq, data)."""
    frames = [await recv_until(socket, lambda f: f.get("op") == "message") for _ in range(count)]
    return [(frame["topic"], frame["seq"], frame["data"]) for frame in frames]


async def test_a_batch_over_several_topics_arrives_in_order_and_numbered_after_earlier_pushes(
    inprocess_server,
):
    socket = await open_socket(inprocess_server.ws_url("/ws/"), inprocess_server.origin)
    for topic in ("room.batch-a", "room.batch-b"):
        await subscribe(socket, topic)
    before = await apush("room.batch-a", "before")
    batch = [("room.batch-a", n) if n % 2 else ("room.batch-b", n) for n in range(10)]

    seqs = await asyncio.to_thread(push_many, batch)

    on_a = [seq for (topic, _), seq in zip(batch, seqs, strict=True) if topic == "room.batch-a"]
    on_b = [seq for (topic, _), seq in zip(batch, seqs, strict=True) if topic == "room.batch-b"]
    assert on_a == list(range(before + 1, before + 6))
    assert on_b == [1, 2, 3, 4, 5]
    got = await messages(socket, 11)
    on_a_got = [(seq, data) for topic, seq, data in got if topic == "room.batch-a"]
    assert on_a_got == [(before, "before"), *zip(on_a, [1, 3, 5, 7, 9], strict=True)]
    assert [(seq, data) for topic, seq, data in got if topic == "room.batch-b"] == list(
        zip(on_b, [0, 2, 4, 6, 8], strict=True)
    )


async def test_a_repeated_keyed_batch_pushes_nothing_twice(inprocess_server, redis_client):
    socket = await open_socket(inprocess_server.ws_url("/ws/"), inprocess_server.origin)
    await subscribe(socket, "room.batch-keys")
    batch = [
        PushMessage("room.batch-keys", {"n": n}, msg="tick", code=201, key=f"k{n}")
        for n in range(3)
    ]
    first = await apush_many(batch)
    again = await apush_many(batch)
    assert first == again == [1, 2, 3]
    assert redis_client.xlen(keys.topic("room.batch-keys").history) == 3
    frames = await recv_through(socket, lambda f: f.get("seq") == 3)
    await socket.send('{"op": "ping"}')
    frames += await recv_through(socket, lambda f: f.get("op") == "pong")
    assert [(f["seq"], f["msg"], f["code"], f["data"]) for f in frames[:-1]] == [
        (n + 1, "tick", 201, {"n": n}) for n in range(3)
    ]  # and nothing more before the pong


@pytest.mark.parametrize(
    "bad",
    [("room.batch-bad", object()), ("nowhere.at-all", 1), PushMessage("room.x", 1, key=""), 7],
    ids=["unencodable data", "unknown topic", "empty key", "not a message"],
)
def test_one_bad_message_refuses_the_whole_batch_and_pushes_nothing(
    inprocess_server, redis_client, bad
):
    with pytest.raises((TypeError, ValueError, topics.UnknownTopic)):
        push_many([("room.batch-bad", "fine"), bad])
    assert not redis_client.exists(keys.topic("room.batch-bad").meta)


def test_a_batch_after_redis_lost_its_scripts_is_published(inprocess_server, redis_client):
    """A restarted Redis has no scripts: the batch loads it first, so none fails."""
    redis_client.script_flush()
    assert push_many([("room.batch-flushed", n) for n in range(3)]) == [1, 2, 3]


def test_an_empty_batch_is_nothing(inprocess_server):
    assert push_many([]) == []


async def test_push_many_from_async_code_is_refused_with_the_async_form(inprocess_server):
    with pytest.raises(RuntimeError, match="apush_many"):
        push_many([("room.batch-async", 1)])


def test_a_batch_longer_than_one_command_keeps_each_topics_order(
    inprocess_server, redis_client, settings
):
    count = BATCH_COMMAND_MAX * 2 + 7
    batch = [(f"room.batch-long-{n % 2}", n) for n in range(count)]
    seqs = push_many(batch)
    assert seqs[0::2] == list(range(1, len(seqs[0::2]) + 1))
    assert seqs[1::2] == list(range(1, len(seqs[1::2]) + 1))
    # Its history keeps the newest messages, numbered in the order given.
    kept = redis_client.xrange(keys.topic("room.batch-long-1").history)
    last = len(seqs[1::2])
    first_kept = last - settings.PUSH_HISTORY_SIZE + 1
    assert [entry_id for entry_id, _ in kept] == [
        f"{seq}-0".encode() for seq in range(first_kept, last + 1)
    ]
