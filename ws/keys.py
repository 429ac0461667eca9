"""Every Redis key the transport writes, built in one place.

Each begins with ``PUSH_KEY_PREFIX`` (``push`` by default), read when the key is
built; the failover keys, the layer's epoch and a process's census key are built
once, as ws loads, so every connection and script of a process agree on them.

A topic's keys share its hash tag ``{topic}``, so in Redis Cluster they are on one
slot, where one script can number, store and publish atomically::

    keys.topic("dashboard.sales").meta       # push:{dashboard.sales}
    keys.topic("dashboard.sales").history    # push:{dashboard.sales}:h
    keys.topic("chat.lobby").presence.count  # push:{chat.lobby}:p:count
    keys.user_sockets(7)                     # push:conns:{7}
"""

from __future__ import annotations

from typing import NamedTuple

from ws.conf import redis_key

__all__ = [
    "PresenceKeys",
    "TopicKeys",
    "census",
    "generation",
    "layer_epoch",
    "pushes",
    "replid",
    "topic",
    "user_sockets",
]


class PresenceKeys(NamedTuple):
    """A topic's presence (``ws/presence.py``), in the order its scripts take them."""

    conns: str  # zset: socket (channel name) -> expiry (ms, Redis' clock)
    member: str  # hash: socket -> member id
    count: str  # hash: member id -> its live sockets
    json: str  # hash: member id -> the member as JSON


class TopicKeys:
    """The keys of one topic's store, all under its hash tag."""

    __slots__ = ("meta",)

    def __init__(self, meta: str) -> None:
        # The hash {seq, epoch, g, pe, ps}: last seq, epoch, failover generation and
        # the position that survived the last failover.
        self.meta = meta

    @property
    def history(self) -> str:
        """The stream of kept messages, one entry per ``seq`` (id ``<seq>-0``)."""
        return f"{self.meta}:h"

    def record(self, key: str) -> str:
        """The record of an idempotent push's ``key``: ``<seq>:<epoch>`` of its first push."""
        return f"{self.meta}:k:{key}"

    @property
    def presence(self) -> PresenceKeys:
        return PresenceKeys(*(f"{self.meta}:p:{part}" for part in PresenceKeys._fields))


def topic(name: str) -> TopicKeys:
    """The keys of topic ``name``."""
    return TopicKeys(redis_key(f"{{{name}}}"))


def user_sockets(user_id: object) -> str:
    """A signed-in user's open sockets on every server process (zset: socket -> expiry)."""
    return redis_key("conns", f"{{{user_id}}}")


def census(process: str) -> str:
    """A server process's socket counts (``ws/census.py``); ``census("*")`` matches them all."""
    return redis_key("census", process)


def pushes(second: int) -> str:
    """The count of pushes made in ``second`` (epoch seconds), every process counted."""
    return redis_key("stats", "pushes", str(second))


def generation() -> str:
    """The current failover generation (``ws/failover.py``)."""
    return redis_key("generation")


def replid() -> str:
    """The replication id of the server the topics are written on (``ws/failover.py``)."""
    return redis_key("replid")


def layer_epoch() -> str:
    """A random value set once, gone when Redis is flushed (``ws/layer_watch.py``)."""
    return redis_key("layer-epoch")
