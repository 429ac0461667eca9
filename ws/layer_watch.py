"""Deaf sockets: noticing that the channel layer's Redis lost what this process was owed.

Messages reach a consumer only while the layer's pub/sub connection is
subscribed to its groups. When Redis restarts, the connection drops and
channels-redis (through redis-py) reconnects and subscribes again, but what
was published in between is gone; when Redis is flushed, the subscriptions
stay but every topic's history and numbering start again. Either way sockets
stay open and hear nothing about it.

One watch per server process checks every ``PUSH_LAYER_CHECK_S``:

- a probe message published to a group of the watch's own on every shard
  must come back through the layer, every one of them (the subscription
  connection is live and subscribed: redis-py resubscribes all channels in one
  command; a shard whose probe does not come back is made to reconnect), and
- the layer's epoch key, set once with a random value, must still hold the
  value seen last (a flush or an empty restart removes it).

When a check passes after one that failed, or the epoch key changed, every
consumer of the process gets a ``push.catchup`` event: it asks Redis where
each of its topics stands and sends its socket what it missed (a replay, or
a reset). So a restart or flush is repaired within about two check periods
of Redis answering again.

An outage shorter than a check period can fall between two checks, while what
was published before the layer's subscription came back is still lost. So the
watch also hears of every reconnect of the layer's pub/sub connections
(redis-py's connect callbacks, which is how redis-py itself resubscribes) and
sends the same catch-up at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import weakref
from typing import Any

from channels.layers import get_channel_layer
from redis.exceptions import RedisError

from ws import keys
from ws.census import census, census_ttl_s
from ws.conf import push_settings
from ws.connections import shard_index
from ws.metrics import counters
from ws.outage import redis_outage
from ws.publisher import publisher
from ws.store import group_channel

logger = logging.getLogger("ws")

CATCHUP_EVENT = "push.catchup"
PROBE_EVENT = "push.probe"
LAYER_EPOCH_KEY = keys.layer_epoch()
_LAYER_EPOCH_LUA = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
return epoch
"""


class LayerWatch:
    """This process's check of the channel layer (see the module's docstring)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.layer: Any = get_channel_layer()
        self.channel = ""
        self.groups: list[str] = []
        self.token = ""
        # The probe groups (one per shard) whose probe has not come back yet.
        self.awaited: set[str] = set()
        self.answered = asyncio.Event()
        # The layer's pub/sub connections whose reconnects we hear of.
        self.heard: weakref.WeakSet[Any] = weakref.WeakSet()

    async def run(self) -> None:
        while True:
            try:
                self.channel = await self.layer.new_channel("watch.")
                self.groups = self._probe_groups()
                for group in self.groups:
                    await self.layer.group_add(group, self.channel)
                # Every shard's subscription exists now: hear its reconnects from the
                # start, not from the first check (an outage may come before it).
                self.hear_reconnects()
                break
            except (RedisError, OSError):  # Redis is down as the process starts
                await asyncio.sleep(self.interval)
        reader = asyncio.create_task(self._read_probes())
        healthy, epochs = True, await self._epochs()
        try:
            while True:
                await asyncio.sleep(self.interval)
                self.hear_reconnects()
                now = await self.check()
                if now is None:
                    if healthy:
                        counters.layer_outages += 1
                        logger.warning("ws channel layer unreachable; sockets will catch up")
                    healthy = False
                    continue
                if not healthy or now != epochs:
                    self.catch_up("Redis came back" if not healthy else "Redis was flushed")
                elif _catch_up_failed.pop(asyncio.get_running_loop(), False):
                    self.catch_up("a catch-up failed")
                healthy, epochs = True, now
                redis_outage.ended()
                await self.write_census()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    def hear_reconnects(self) -> None:
        """Have each pub/sub connection of the layer call ``reconnected`` when it reconnects.

        channels-redis makes a connection per shard on first use and keeps it; redis-py
        calls its connect callbacks on every (re)connect, after its own resubscribe.
        """
        for shard in self.layer._shards:
            connection = getattr(getattr(shard, "_pubsub", None), "connection", None)
            if connection is not None and connection not in self.heard:
                connection.register_connect_callback(self.reconnected)
                self.heard.add(connection)

    def reconnected(self, connection: Any) -> None:
        """A pub/sub connection of the layer is back: what was published meanwhile is lost."""
        self.catch_up("the channel layer reconnected to Redis")

    def _probe_groups(self) -> list[str]:
        """One group of our own on each shard of the layer."""
        shards = len(self.layer._shards)
        prefix = self.layer.prefix
        base = f"push.watch.{os.getpid()}.{secrets.token_hex(4)}"
        by_shard: dict[int, str] = {}
        index = 0
        while len(by_shard) < shards:
            name = f"{base}.{index}"
            by_shard.setdefault(shard_index(group_channel(prefix, name), shards), name)
            index += 1
        return list(by_shard.values())

    async def _read_probes(self) -> None:
        while True:
            event = await self.layer.receive(self.channel)
            if event.get("token") == self.token:
                self.awaited.discard(event.get("group", ""))
                if not self.awaited:
                    self.answered.set()

    async def _epochs(self) -> tuple[str, ...] | None:
        try:
            return await publisher.arun(
                lambda: publisher.run_on_every_shard(
                    _LAYER_EPOCH_LUA, [LAYER_EPOCH_KEY], [secrets.token_hex(8)]
                )
            )
        except (RedisError, OSError):
            return None

    async def check(self) -> tuple[str, ...] | None:
        """The layer's epochs when a probe made the round trip; None otherwise."""
        epochs = await self._epochs()
        if epochs is None:
            return None
        self.token = secrets.token_hex(8)
        self.awaited = set(self.groups)
        self.answered.clear()
        try:
            for group in self.groups:
                event = {"type": PROBE_EVENT, "token": self.token, "group": group}
                await publisher.arun(lambda g=group, e=event: publisher.send_event(g, e))
            await asyncio.wait_for(self.answered.wait(), timeout=self.interval)
        except (RedisError, OSError, TimeoutError):
            await self.revive_subscriptions()
            return None
        return epochs

    async def revive_subscriptions(self) -> None:
        """Have every shard's pub/sub connection that lost its server connect again.

        channels-redis reconnects a shard's subscription only when it sends that shard
        a command (a subscribe to a channel not yet subscribed, say): a shard whose
        channels are all subscribed already may stay unsubscribed after its Redis came
        back. A PING through the subscription makes redis-py reconnect it and
        resubscribe every channel (then ``reconnected`` sends the catch-up). One
        that still cannot connect is tried again at the next failed check.
        """
        for shard in self.layer._shards:
            pubsub = getattr(shard, "_pubsub", None)
            if pubsub is None or not pubsub.subscribed:
                continue
            try:
                async with shard._lock:
                    await pubsub.ping()
            except (RedisError, OSError):
                continue

    async def write_census(self) -> None:
        """This process's socket counts, for readers in every process (ws/census.py)."""
        try:
            await census.write(census_ttl_s())
        except (RedisError, OSError) as error:
            logger.warning("ws could not write the socket census: %s", error)

    def catch_up(self, reason: str) -> None:
        counters.layer_recoveries += 1
        count = self.layer.deliver_locally({"type": CATCHUP_EVENT}, exclude=self.channel)
        logger.warning("ws %s: %d sockets catching up", reason, count)


_watches: dict[asyncio.AbstractEventLoop, asyncio.Task[None]] = {}


# Loops where a socket's catch-up failed (Redis went away again, or a pooled
# connection was still the old server's): the watch repeats it at its next check.
_catch_up_failed: dict[asyncio.AbstractEventLoop, bool] = {}


def catch_up_again_later() -> None:
    """Ask this process's watch to send every socket a catch-up at its next healthy check."""
    _catch_up_failed[asyncio.get_running_loop()] = True


def ensure_layer_watch() -> None:
    """Start this process's watch on the running loop, once (consumers call it on connect)."""
    loop = asyncio.get_running_loop()
    task = _watches.get(loop)
    if task is None or task.done():
        watch = LayerWatch(push_settings.PUSH_LAYER_CHECK_S)
        _watches[loop] = loop.create_task(watch.run(), name="push-layer-watch")


async def stop_layer_watch() -> None:
    """Stop the running loop's watch, if one runs (an embedding that ends its loop)."""
    task = _watches.pop(asyncio.get_running_loop(), None)
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
