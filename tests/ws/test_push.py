"""The push API against the real channel layer on a real Redis."""

from __future__ import annotations

import asyncio
import json
import threading
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from ws import SendMessage, apush, keys, push
from ws.topics import UnknownTopic, group_name


async def _member_of(topic: str) -> tuple[object, str]:
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group_name(topic), channel)
    return layer, channel


async def test_apush_reaches_a_group_member_numbered_and_encoded():
    layer, channel = await _member_of("dashboard.push-encoded")

    first = await apush("dashboard.push-encoded", {"total": Decimal("1.50")}, msg="sales")
    second = await apush("dashboard.push-encoded", [1, 2])

    events = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(2)]
    assert second == first + 1
    assert [event["seq"] for event in events] == [first, second]
    assert json.loads("{" + events[0]["body"] + "}") == {
        "msg": "sales",
        "code": 200,
        "data": {"total": "1.50"},
    }
    assert events[0]["topic"] == "dashboard.push-encoded"
    assert events[0]["epoch"] == events[1]["epoch"]


def test_sync_push_numbers_every_message_once_across_threads(redis_client):
    topic = "dashboard.push-threads"
    seqs: list[int] = []
    lock = threading.Lock()

    def pusher() -> None:
        for i in range(50):
            seq = push(topic, {"i": i})
            with lock:
                seqs.append(seq)

    threads = [threading.Thread(target=pusher) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    first = min(seqs)
    assert sorted(seqs) == list(range(first, first + 200))
    # Every message is kept for resume, in order.
    stored = redis_client.xrange(keys.topic(topic).history)
    assert [int(entry_id.split(b"-")[0]) for entry_id, _ in stored][-100:] == sorted(seqs)[-100:]


def test_pushes_reuse_one_connection(redis_client):
    push("dashboard.push-warm", 0)
    before = redis_client.info("stats")["total_connections_received"]
    for i in range(200):
        push("dashboard.push-conn", i)
    after = redis_client.info("stats")["total_connections_received"]
    # Our own INFO call is one; 200 pushes must not open 200 connections.
    assert after - before <= 2


def test_push_refuses_unknown_topics_and_async_context():
    with pytest.raises(UnknownTopic):
        push("nope.x", 1)

    async def from_async() -> None:
        push("dashboard.x", 1)

    with pytest.raises(RuntimeError, match="apush"):
        asyncio.run(from_async())


async def test_send_message_speaks_the_seed_envelope_sync_async_and_async_to_sync():
    layer, channel = await _member_of("room.seedhelper")

    await SendMessage("seedhelper").send({"chat_type": "chat.data", "value": 1})
    await asyncio.to_thread(SendMessage("seedhelper").send, {"code": 201, "msg": "m", "data": 2})
    await asyncio.to_thread(async_to_sync(SendMessage("seedhelper").send), {"value": 3})

    bodies = [
        json.loads("{" + (await asyncio.wait_for(layer.receive(channel), 5))["body"] + "}")
        for _ in range(3)
    ]
    assert bodies == [
        {"msg": "success", "code": 200, "data": {"value": 1}},
        {"msg": "m", "code": 201, "data": 2},
        {"msg": "success", "code": 200, "data": {"value": 3}},
    ]
    assert group_name("room.seedhelper") == "chat_seedhelper"


async def test_a_keyed_push_repeated_pushes_once_and_answers_the_same_seq():
    layer, channel = await _member_of("room.keyed")
    first = await apush("room.keyed", {"event": 1}, key="order-17-paid")
    again = await apush("room.keyed", {"event": 1}, key="order-17-paid")
    marker = await apush("room.keyed", "marker")

    assert again == first
    assert marker == first + 1  # the repeat took no number
    events = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(2)]
    assert [event["seq"] for event in events] == [first, marker]  # nothing in between


def test_a_push_key_must_be_a_short_string():
    with pytest.raises(ValueError, match="key"):
        push("room.keyed", 1, key="")
    with pytest.raises(ValueError, match="key"):
        push("room.keyed", 1, key="k" * 201)
