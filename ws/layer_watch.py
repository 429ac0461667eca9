"""Deaf sockets: noticing that the channel layer's Redis lost what this process was owed.

Messages reach a consumer only while the layer's pub/sub connection is
subscribed to its groups. When Redis restarts, the connection drops and
channels-redis (through redis-py) reconnects and subscribes again, but what
was published in between is gone; when Redis is flushed, the subscriptions
stay but every topic's history and numbering start again. Either way sockets
stay open and hear nothing about it.

One watch per server process checks every ``PUSH_LAYER_CHECK_S``:

- a probe message published to a group of the watch's own, on every shard,
  must come back through the layer (the subscription connection is live and
  subscribed: redis-py resubscribes all channels in one command), and
- the layer's epoch key, set once with a random value, must still hold the
  value seen last (a flush or an empty restart removes it).

When a check passes after one that failed, or the epoch key changed, every
consumer of the process gets a ``push.catchup`` event: it asks Redis where
each of its topics stands and sends its socket what it missed (a replay, or
a reset). So a restart or flush is repaired within about two check periods
of Redis answering again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from typing import Any

from channels.layers import get_channel_layer
from channels_redis.utils import _consistent_hash
from django.conf import settings
from redis.exceptions import RedisError

from ws._publisher import group_channel, publisher
from ws.census import census, census_ttl_s
from ws.metrics import counters
from ws.outage import redis_outage

logger = logging.getLogger("ws")

CATCHUP_EVENT = "push.catchup"
PROBE_EVENT = "push.probe"
LAYER_EPOCH_KEY = "push:layer-epoch"
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
        self.answered = asyncio.Event()

    async def run(self) -> None:
        while True:
            try:
                self.channel = await self.layer.new_channel("watch.")
                self.groups = self._probe_groups()
                for group in self.groups:
                    await self.layer.group_add(group, self.channel)
                break
            except (RedisError, OSError):  # Redis is down as the process starts
                await asyncio.sleep(self.interval)
        reader = asyncio.create_task(self._read_probes())
        healthy, epochs = True, await self._epochs()
        try:
            while True:
                await asyncio.sleep(self.interval)
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

    def _probe_groups(self) -> list[str]:
        """One group of our own on each shard of the layer."""
        shards = len(self.layer._shards)
        prefix = self.layer.prefix
        base = f"push.watch.{os.getpid()}.{secrets.token_hex(4)}"
        by_shard: dict[int, str] = {}
        index = 0
        while len(by_shard) < shards:
            name = f"{base}.{index}"
            by_shard.setdefault(_consistent_hash(group_channel(prefix, name), shards), name)
            index += 1
        return list(by_shard.values())

    async def _read_probes(self) -> None:
        while True:
            event = await self.layer.receive(self.channel)
            if event.get("token") == self.token:
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
        self.answered.clear()
        try:
            event = {"type": PROBE_EVENT, "token": self.token}
            for group in self.groups:
                await publisher.arun(lambda group=group: publisher.send_event(group, event))
            await asyncio.wait_for(self.answered.wait(), timeout=self.interval)
        except (RedisError, OSError, TimeoutError):
            return None
        return epochs

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
        watch = LayerWatch(settings.PUSH_LAYER_CHECK_S)
        _watches[loop] = loop.create_task(watch.run(), name="push-layer-watch")
