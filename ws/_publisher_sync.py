"""Publishing from sync code (Celery tasks, views, the shell) without a thread hop.

``push()`` from sync code used to hand each push to the publisher's background
loop and wait for it: two thread wake-ups per push, which cost more than the
Redis round trip itself (a worker managed about 2,000 pushes a second). Here
the calling thread talks to Redis directly, through one redis-py client per
process (a thread-safe pool, rebuilt after a fork), sending the same Lua
script as the async path (one command per push, the count included). So the
numbering, history, idempotency and wire format are exactly those of
``Publisher.publish``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

import redis
from channels_redis.utils import _consistent_hash
from redis.commands.core import Script

from ws._publisher import (
    _PUBLISH_LUA,
    Position,
    PublishCall,
    _layer_config,
    _text,
    group_channel,
    sync_pool,
)
from ws.topics import Retention


@dataclass
class _SyncShards:
    pid: int
    prefix: str
    clients: list[redis.Redis] = field(default_factory=list)
    scripts: list[Script] = field(default_factory=list)


class SyncPublisher:
    """One sync Redis client per shard and process, made on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shards: _SyncShards | None = None

    def _connected(self) -> _SyncShards:
        shards = self._shards
        if shards is not None and shards.pid == os.getpid():
            return shards
        with self._lock:
            shards = self._shards
            if shards is not None and shards.pid == os.getpid():
                return shards
            hosts, prefix = _layer_config()
            shards = _SyncShards(pid=os.getpid(), prefix=prefix)
            for host in hosts:
                client = redis.Redis(connection_pool=sync_pool(host, f"push-{os.getpid()}"))
                shards.clients.append(client)
                shards.scripts.append(client.register_script(_PUBLISH_LUA))
            self._shards = shards
            return shards

    def publish(
        self, topic: str, group: str, body: str, key: str, retention: Retention
    ) -> Position:
        """``Publisher.publish``, from this thread."""
        shards = self._connected()
        channel = group_channel(shards.prefix, group)
        index = _consistent_hash(channel, len(shards.clients))
        call = PublishCall.make(topic, channel, body, key, retention)
        seq, epoch = shards.scripts[index](keys=call.keys, args=call.args)
        return Position(int(seq), _text(epoch))


sync_publisher = SyncPublisher()
