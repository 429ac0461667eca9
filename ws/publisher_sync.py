"""Publishing from sync code (Celery tasks, views, the shell) without a thread hop.

``push()`` from sync code used to hand each push to the publisher's background
loop and wait for it: two thread wake-ups per push, which cost more than the
Redis round trip itself (a worker managed about 2,000 pushes a second). Here
the calling thread talks to Redis directly, through one redis-py client per
shard and process (thread-safe pools, made again after a fork:
``ws/connections.py``), sending the same Lua script as the async path (one
command per push, the count included). So the numbering, history, idempotency
and wire format are exactly those of ``Publisher.publish`` (``ws/publisher.py``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import redis
from redis.commands.core import Script

from ws.connections import PerProcess, Shards, sync_shards
from ws.store import (
    PUBLISH_LUA,
    PUBLISH_MANY_LUA,
    Batch,
    Outgoing,
    Position,
    PublishCall,
    group_channel,
    text,
)
from ws.topics import Retention

__all__ = ["SyncPublisher", "sync_publisher"]


@dataclass(frozen=True)
class _SyncShards:
    shards: Shards[redis.Redis]
    scripts: list[Script]
    many_scripts: list[Script]


def _connect() -> _SyncShards:
    shards = sync_shards(f"push-{os.getpid()}")
    return _SyncShards(
        shards,
        [client.register_script(PUBLISH_LUA) for client in shards.clients],
        [client.register_script(PUBLISH_MANY_LUA) for client in shards.clients],
    )


class SyncPublisher:
    """One sync Redis client per shard and process, made on first use."""

    def __init__(self) -> None:
        self._process = PerProcess(_connect)

    def publish(
        self, topic: str, group: str, body: str, key: str, retention: Retention
    ) -> Position:
        """``Publisher.publish``, from this thread."""
        connected = self._process.get()
        channel = group_channel(connected.shards.prefix, group)
        index = connected.shards.index(channel)
        call = PublishCall.make(topic, channel, body, key, retention)
        seq, epoch = connected.scripts[index](keys=call.keys, args=call.args)
        return Position(int(seq), text(epoch))

    def publish_many(self, pushes: Sequence[Outgoing]) -> list[Position]:
        """``publish`` for each of ``pushes``: one command per shard (``PUBLISH_MANY_LUA``,
        up to ``BATCH_COMMAND_MAX`` pushes each), each topic's pushes in the given order;
        their positions, in that order."""
        connected = self._process.get()
        batch = Batch.of(pushes, connected.shards.prefix, connected.shards.index)
        for index, calls in batch.calls.items():
            for call in calls:
                batch.answered(call, connected.many_scripts[index](keys=call.keys, args=call.args))
        return batch.positions()


sync_publisher = SyncPublisher()
