"""The channel layer: channels-redis' pub/sub layer with a bounded queue per consumer.

channels-redis' ``RedisPubSubChannelLayer`` queues what Redis delivers for a
consumer in an unbounded ``asyncio.Queue``: a consumer that falls behind (its
process overloaded) grows it without limit. This layer bounds each queue at
``capacity`` messages. Past that, new messages are dropped, counted
(``push_messages_dropped_total`` at ``/ws/metrics``), logged at WARNING, and
stood for by one ``push.overflow`` event: the consumer learns it fell behind
and catches up from the topic's history (a replay, or a reset when too far
behind) instead of silently missing messages. The core ``RedisChannelLayer``
drops in the same place but logs only at INFO and tells nobody.

Everything else (wire format, groups, reconnection) is channels-redis' own;
the subclass hooks only where a consumer's queue is made (pinned 4.3).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer
from channels_redis.utils import _wrap_close

from ws.metrics import counters

logger = logging.getLogger("ws")

OVERFLOW_EVENT = "push.overflow"
DEFAULT_CAPACITY = 1000


class BoundedQueue:
    """A consumer's queue: at most ``capacity`` messages, then one overflow marker.

    It stands in for the ``asyncio.Queue`` channels-redis makes, which it uses
    only through ``put_nowait`` and ``get`` by the one consumer that owns the
    channel. With one reader, a deque and one waiting future do the job: about
    2 KiB less per socket than ``asyncio.Queue`` (three deques and an Event).
    """

    __slots__ = ("_items", "_waiter", "capacity", "channel", "marker", "marker_queued")

    def __init__(self, capacity: int, marker: bytes, channel: str) -> None:
        self.capacity = capacity
        self.marker = marker
        self.channel = channel
        self.marker_queued = False
        self._items: collections.deque[Any] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None

    def qsize(self) -> int:
        return len(self._items)

    def put_nowait(self, item: Any) -> None:
        if item is self.marker or len(self._items) < self.capacity:
            self._append(item)
            return
        counters.messages_dropped += 1
        if not self.marker_queued:
            # Over capacity: this message is dropped; the marker (one slot past
            # capacity) tells the consumer to catch up from history.
            self.marker_queued = True
            logger.warning(
                "ws channel %s is over capacity (%d): dropping, the consumer will resync",
                self.channel,
                self.capacity,
            )
            self._append(self.marker)

    def _append(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        """The oldest message, waiting for one if there is none (one reader only)."""
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if item is self.marker:
            self.marker_queued = False
        return item


class BoundedLoopLayer(RedisPubSubLoopLayer):
    """One event loop's layer, whose consumer queues are bounded."""

    def __init__(self, *args: Any, capacity: int = DEFAULT_CAPACITY, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capacity = capacity

    async def _subscribe_to_channel(self, channel: str) -> None:
        marker = self.channel_layer.serialize({"type": OVERFLOW_EVENT})
        self.channels[channel] = BoundedQueue(self.capacity, marker, channel)
        shard = self._get_shard(channel)
        try:
            await shard.subscribe(channel)
        except BaseException:  # Redis is away: no consumer will read or free this queue
            self.channels.pop(channel, None)
            raise

    def deliver_locally(self, event: dict[str, Any], exclude: str = "") -> int:
        """Put ``event`` in the queue of every consumer of this process; return how many."""
        data = self.channel_layer.serialize(event)
        count = 0
        for name, queue in list(self.channels.items()):
            if name != exclude:
                queue.put_nowait(data)
                count += 1
        return count


class PushChannelLayer(RedisPubSubChannelLayer):
    """``RedisPubSubChannelLayer`` with bounded consumer queues (CONFIG ``capacity``).

    A group message reaches every member's queue as the same bytes object, so
    it is decoded once for all of them (the last decoded message is kept).
    Members therefore share the event dict: handlers read events, never change them.
    """

    _last_decoded: tuple[bytes | None, Any] = (None, None)

    def deserialize(self, message: bytes) -> Any:
        raw, event = self._last_decoded  # one read: safe when threads share the layer
        if message is raw:
            return event
        event = super().deserialize(message)
        self._last_decoded = (message, event)
        return event

    def _get_layer(self) -> BoundedLoopLayer:
        loop = asyncio.get_running_loop()
        try:
            return self._layers[loop]
        except KeyError:
            layer = BoundedLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
            return layer
