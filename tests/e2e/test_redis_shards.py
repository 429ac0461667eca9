"""Two Redis shards under one stack (``REDIS_SHARD_URLS``): each topic lives on one.

channels-redis puts each group's pub/sub channel on one of its hosts by a hash
of the channel's name; the publisher keeps the topic's numbering and history
on that same host, so its one script still numbers, stores and publishes
atomically. Presence lives where its topic does. When one shard stops, only the
topics on it wait (their subscribes are answered ``4503``); the others carry on.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from channels_redis.utils import _consistent_hash
from websockets.asyncio.client import ClientConnection

from project.redis_server import RedisServer, free_port
from tests.chat.rooms import make_room
from tests.support.clients import open_socket, recv_until, subscribe, subscribe_when_served
from tests.support.processes import WebServer
from tests.support.pushing import KeyedPusher
from tests.support.users import in_thread, session_cookie
from ws import keys, topics
from ws.store import Position, group_channel

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.faults]

BACKOFF_S = (0.05, 0.1, 0.2, 0.4)


def shard_of(topic: str, shards: int = 2) -> int:
    """The shard channels-redis (and so the publisher) puts ``topic``'s group on."""
    return _consistent_hash(group_channel("asgi", topics.group_name(topic)), shards)


def topic_on(shard: int, pattern: str) -> str:
    """The first name ``pattern.format(n)`` whose topic lives on ``shard``."""
    return next(name for n in itertools.count() if shard_of(name := pattern.format(n)) == shard)


@dataclass
class ShardedStack:
    shards: list[RedisServer]
    server: WebServer
    pusher: KeyedPusher

    def push(self, topic: str, n: int) -> Position:
        """Push ``n`` (keyed), again with backoff while its shard is away."""
        return self.pusher.push_until_done(topic, n)

    def holds(self, shard: int, key: str) -> bool:
        with redis.Redis(port=self.shards[shard].port) as client:
            return bool(client.exists(key))


@pytest.fixture(scope="module")
def sharded_stack(child_env, log_dir) -> Iterator[ShardedStack]:
    directory = Path(tempfile.mkdtemp(prefix="push-shards-"))
    shards = [RedisServer.start(directory / f"shard-{n}", tied_to_parent=True) for n in range(2)]
    env = {key: value for key, value in child_env.items() if key != "REDIS_URL"}
    env.update(
        REDIS_SHARD_URLS=",".join(shard.url for shard in shards),
        PUSH_LAYER_CHECK_S="1",
    )
    server = WebServer(env, log_dir, free_port(), "uvicorn", name="uvicorn-shards")
    yield ShardedStack(shards, server, KeyedPusher([shard.url for shard in shards]))
    server.stop()
    for shard in shards:
        shard.stop()
    shutil.rmtree(directory, ignore_errors=True)


async def next_data(socket: ClientConnection, topic: str) -> int:
    frame = await recv_until(socket, lambda f: f.get("op") == "message" and f["topic"] == topic)
    return frame["data"]


async def test_topics_live_on_their_shard_and_one_shard_down_stops_only_its_topics(
    sharded_stack, alice
):
    stack = sharded_stack
    on_a, on_b = topic_on(0, "room.shard-{}"), topic_on(1, "room.shard-{}")
    room_a, room_b = topic_on(0, "chat.shard-room-{}"), topic_on(1, "chat.shard-room-{}")
    for room in (room_a, room_b):
        await in_thread(make_room, room.removeprefix("chat."), alice)
    cookie = {"Cookie": await in_thread(session_cookie, alice)}
    url, origin = stack.server.ws_url("/ws/"), stack.server.origin
    socket = await open_socket(url, origin, additional_headers=cookie)

    # Numbering, history and presence: each on its topic's shard, and nowhere else.
    for topic in (on_a, on_b):
        assert (await subscribe(socket, topic))["op"] == "subscribed"
    for room in (room_a, room_b):
        assert (await subscribe(socket, room))["op"] == "subscribed"
        listed = await recv_until(socket, lambda f, t=room: f.get("op") == "presence")
        assert [member["id"] for member in listed["members"]] == [f"user:{alice.pk}"]
    first = {topic: await asyncio.to_thread(stack.push, topic, 1) for topic in (on_a, on_b)}
    # Two shards, two pub/sub connections: the two may arrive in either order.
    arrived = [await recv_until(socket, lambda f: f.get("op") == "message") for _ in range(2)]
    assert sorted((frame["topic"], frame["data"]) for frame in arrived) == sorted(
        [(on_a, 1), (on_b, 1)]
    )
    for shard, topic in ((0, on_a), (1, on_b)):
        assert stack.holds(shard, keys.topic(topic).history)
        assert not stack.holds(1 - shard, keys.topic(topic).meta)

    # A resume on each shard replays what a socket missed there.
    for topic in (on_a, on_b):
        await asyncio.to_thread(stack.push, topic, 2)
        assert await next_data(socket, topic) == 2
    late = await open_socket(url, origin)
    for topic in (on_a, on_b):
        await late.send(
            json.dumps({"op": "subscribe", "topic": topic, "since": 1, "epoch": first[topic].epoch})
        )
        answer = await recv_until(late, lambda f, t=topic: f.get("topic") == t)
        assert (answer["op"], answer["recovered"]) == ("subscribed", True)
        assert await next_data(late, topic) == 2

    # Shard B stops: shard A's topics carry on; a subscribe to one of B's is answered 4503.
    stack.shards[1].stop()
    try:
        started = time.monotonic()
        await asyncio.to_thread(stack.push, on_a, 3)
        assert await next_data(socket, on_a) == 3
        a_during_s = time.monotonic() - started
        other_a = topic_on(0, "room.shard-other-{}")
        assert (await subscribe(late, other_a))["op"] == "subscribed"
        refused = await subscribe(late, topic_on(1, "room.shard-other-{}"))
        assert (refused["op"], refused["code"], refused["request"]) == ("error", 4503, "subscribe")
    finally:
        stack.shards[1].launch()

    # Back: B's topics are served again, and what was pushed there is delivered.
    _, answer = await subscribe_when_served(url, origin, on_b)
    assert answer["seq"] == 2
    await asyncio.to_thread(stack.push, on_b, 3)
    assert await next_data(socket, on_b) == 3
    print(f"\nshards: a push on shard A during shard B's outage arrived in {a_during_s:.3f}s")
    assert stack.server.failures_since(0) == []
