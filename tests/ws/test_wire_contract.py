"""What ws publishes is what channels-redis' pub/sub layer reads, and the other way round.

ws does not send through the layer: its Lua scripts PUBLISH pushes and presence
events straight to a group's pub/sub channel, in the layer's msgpack format
(``ws/store.py``, ``ws/presence.py``), and unnumbered events are packed in Python
(``Publisher.send_event``). That leans on three things of channels-redis that are
not its API: how it names a group's channel, how it serializes a message, and
which shard it picks for a channel. An upgrade that changes any of them must
fail here, not in production, where every socket would go silent.

A real layer (channels-redis' own class, and ours) on the session's Redis, set up
as ``CHANNEL_LAYERS['default']`` (same hosts, same prefix), joins the topic's group
as a consumer does; ws pushes through its public calls; the layer decodes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import msgpack
import pytest
import pytest_asyncio
import redis.asyncio
from django.utils.module_loading import import_string

from ws import apush, keys, presence, push, topics
from ws.connections import shard_index
from ws.protocol import encode_body, encode_data
from ws.push import EPHEMERAL_EVENT_TYPE, aephemeral
from ws.store import PUSH_EVENT_TYPE, group_channel

UPSTREAM_LAYER = "channels_redis.pubsub.RedisPubSubChannelLayer"
RECEIVE_S = 5


def layer_config(settings: Any) -> dict[str, Any]:
    return settings.CHANNEL_LAYERS["default"]["CONFIG"]


@pytest_asyncio.fixture(params=[UPSTREAM_LAYER, "ws.layer.PushChannelLayer"])
async def layer(
    request: pytest.FixtureRequest, settings: Any, redis_server: Any
) -> AsyncIterator[Any]:
    """A channel layer of this process, on the session's Redis, configured as ws's."""
    config = layer_config(settings)
    (host,) = config["hosts"]
    address = host["address"] if isinstance(host, dict) else host
    assert address == redis_server.url  # the throwaway Redis, never a shared one
    made = import_string(request.param)(**config)
    yield made
    await made.flush()


async def member_of(layer: Any, topic: str) -> str:
    """A new consumer channel in ``topic``'s group, as a subscribing socket's."""
    channel = await layer.new_channel()
    await layer.group_add(topics.group_name(topic), channel)
    return channel


async def received(layer: Any, channel: str) -> dict[str, Any]:
    return await asyncio.wait_for(layer.receive(channel), RECEIVE_S)


def assert_exact(event: dict[str, Any], expected: dict[str, Any]) -> None:
    """Equal, and of the same types (msgpack could give ``1.0`` for ``1``, bytes for text)."""
    assert event == expected
    assert {key: type(value) for key, value in event.items()} == {
        key: type(value) for key, value in expected.items()
    }


@pytest.mark.parametrize("path", ["apush", "push"])
async def test_a_push_reaches_the_layer_as_the_event_consumers_read(layer, path, redis_client):
    topic = f"dashboard.wire-{path}"
    channel = await member_of(layer, topic)
    data = {"total": Decimal("1.50"), "at": datetime(2024, 5, 1, 12, 0, tzinfo=UTC), "n": [1]}

    if path == "apush":  # the publisher's background loop
        seq = await apush(topic, data, msg="sales")
    else:  # sync code's own client, from its own thread
        seq = await asyncio.to_thread(push, topic, data, msg="sales")

    event = await received(layer, channel)
    epoch = redis_client.hget(keys.topic(topic).meta, "epoch").decode()
    assert_exact(
        event,
        {
            "type": PUSH_EVENT_TYPE,  # what the consumers dispatch on
            "topic": topic,
            "seq": seq,
            "epoch": epoch,
            "body": encode_body(data, "sales", 200),
        },
    )
    assert json.loads("{" + event["body"] + "}")["data"]["total"] == "1.50"


async def test_an_ephemeral_event_reaches_the_layer_as_sent(layer):
    topic = "dashboard.wire-ephemeral"
    channel = await member_of(layer, topic)
    await aephemeral(topic, {"typing": "alice", "at": Decimal("2")})
    assert_exact(
        await received(layer, channel),
        {
            "type": EPHEMERAL_EVENT_TYPE,
            "topic": topic,
            "data": encode_data({"typing": "alice", "at": Decimal("2")}),
        },
    )


async def test_presence_events_reach_the_layer_as_the_consumers_read_them(layer):
    topic = "chat.wire-presence"
    channel = await member_of(layer, topic)
    member = presence.Member(id="user:wire", name="wire")
    conn = "specific.wire-presence-socket"
    try:
        await presence.join(topic, conn, member)
        joined = await received(layer, channel)
    finally:
        await presence.leave(topic, conn)
    left = await received(layer, channel)
    for event, kind in ((joined, "presence.join"), (left, "presence.leave")):
        assert_exact(event, {"type": kind, "topic": topic, "member": json.dumps(member)})
        assert json.loads(event["member"]) == member  # as the consumers decode it


async def test_what_the_layer_sends_to_a_group_is_what_ws_sends(layer, settings, redis_server):
    """The layer's own ``group_send`` goes to ``group_channel`` as plain msgpack: the bytes
    ``Publisher.send_event`` and the scripts produce for the same event."""
    group = topics.group_name("dashboard.wire-reverse")
    event = {"type": "push.access", "reason": "logout", "user": 7, "session": None}
    listener = redis.asyncio.Redis.from_url(redis_server.url)
    pubsub = listener.pubsub()
    try:
        await pubsub.subscribe(group_channel(layer_config(settings)["prefix"], group))
        await layer.group_send(group, event)
        async with asyncio.timeout(RECEIVE_S):
            message = None
            while message is None:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
    finally:
        await pubsub.aclose()
        await listener.aclose()
    assert message["data"] == msgpack.packb(event)
    assert msgpack.unpackb(message["data"]) == event


class StandInShard:
    """Records what the layer sends through one of its shards' connections."""

    def __init__(self) -> None:
        self.subscribed: list[str] = []
        self.published: list[str] = []

    async def subscribe(self, channel: str) -> None:
        self.subscribed.append(channel)

    async def publish(self, channel: str, message: bytes) -> None:
        self.published.append(channel)

    async def unsubscribe(self, channel: str) -> None:
        pass

    async def flush(self) -> None:
        pass


@pytest.mark.parametrize("backend", [UPSTREAM_LAYER, "ws.layer.PushChannelLayer"])
async def test_ws_writes_a_group_s_keys_on_the_shard_the_layer_carries_it_on(settings, backend):
    """With several hosts, a topic's keys and its group's channel must be on one shard:
    ws routes by the layer's rule. The layer's shard connections are stood in for."""
    config = dict(layer_config(settings), hosts=[f"redis://127.0.0.1:1/{db}" for db in range(5)])
    made = import_string(backend)(**config)
    shards = [StandInShard() for _ in config["hosts"]]
    made._get_layer()._shards = shards
    channel = await made.new_channel()
    for n in range(50):
        group = topics.group_name(f"dashboard.wire-shard-{n}")
        await made.group_add(group, channel)
        await made.group_send(group, {"type": "push.probe"})
        name = group_channel(config["prefix"], group)
        ours = shard_index(name, len(shards))
        assert [(name in s.subscribed, name in s.published) for s in shards] == [
            (index == ours, index == ours) for index in range(len(shards))
        ]
