"""Redis clients of the transport: one factory, for the channel layer's shards, per process.

Every Redis client ws makes (the channel layer makes its own) is made here: the
publisher's (asyncio, on its background loop, ``ws/publisher.py``) and the sync
publisher's (redis-py's sync client, ``ws/publisher_sync.py``). Both talk to the hosts of
``CHANNEL_LAYERS['default']``, shard for shard, so a topic's keys live where
the layer carries its group's pub/sub channel and one script can store and
publish at once. Each new connection first checks for a failover
(``ws.failover``), and a pool blocks, rather than fails, when all its
connections are busy.

Fork-safe: a forked child (a Celery prefork worker) inherits the parent's
clients, sockets and all, but none of its threads. Sharing a socket with the
parent would mix up the two processes' replies, and the parent's loop thread
does not run in the child; so clients are held in ``PerProcess``, which makes
new ones on first use in each process.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import redis
import redis.asyncio
import redis.retry
import redis.sentinel
from channels_redis.utils import _consistent_hash, create_pool, decode_hosts
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from redis.asyncio.retry import Retry as AsyncRetry

from ws.conf import layer_problem
from ws.failover import notice_on_connect, notice_on_connect_sync

__all__ = [
    "POOL_SIZE",
    "POOL_WAIT_S",
    "PerProcess",
    "Shards",
    "async_shards",
    "blocking_pool",
    "layer_config",
    "shard_index",
    "sync_client_options",
    "sync_shards",
]

T = TypeVar("T")
C = TypeVar("C")

# Connections per Redis shard of one process's publisher. A burst of work (a thousand
# sockets subscribing at once) waits for a free one instead of failing: redis-py's
# default pool refuses past its limit with MaxConnectionsError.
POOL_SIZE = 50
POOL_WAIT_S = 20

_SENTINEL_ONLY = ("sentinels", "master_name", "sentinel_kwargs")


def layer_config() -> tuple[list[dict[str, Any]], str]:
    """The channel layer's host entries and prefix, checked as ``ws.E003`` checks it
    (``ws.conf.layer_problem``): a shell or a worker runs no system checks."""
    problem = layer_problem()
    if problem is not None:
        raise ImproperlyConfigured(problem)
    config = settings.CHANNEL_LAYERS["default"].get("CONFIG") or {}
    return decode_hosts(config.get("hosts")), config.get("prefix", "asgi")


def shard_index(name: str, shards: int) -> int:
    """Which of ``shards`` the layer uses for a channel (a group's) or a key: channels-redis'
    own rule, so what we write for a group lands where the layer carries it."""
    return _consistent_hash(name, shards)


@dataclass(frozen=True)
class Shards(Generic[C]):
    """One client per shard of the channel layer, and the layer's prefix."""

    prefix: str
    clients: list[C]

    def index(self, name: str) -> int:
        """The shard of a channel or key (``shard_index``)."""
        return shard_index(name, len(self.clients))


def async_shards(client_name: str) -> Shards[redis.asyncio.Redis]:
    """asyncio clients for every shard, named ``client_name`` (as ``CLIENT LIST`` shows).

    Make and use them on one event loop: a redis-py asyncio pool belongs to its loop.
    """
    hosts, prefix = layer_config()
    clients = [
        redis.asyncio.Redis(connection_pool=_async_pool({**host, "client_name": client_name}))
        for host in hosts
    ]
    return Shards(prefix, clients)


def sync_shards(client_name: str) -> Shards[redis.Redis]:
    """redis-py's sync clients for every shard (thread-safe pools), named ``client_name``."""
    hosts, prefix = layer_config()
    return Shards(prefix, [redis.Redis(connection_pool=_sync_pool(h, client_name)) for h in hosts])


class PerProcess(Generic[T]):
    """A value made by ``make`` on first use in each process; a forked child makes its own.

    ``alive`` says whether a value made in this process is still usable (a loop whose
    thread is running); one that is not is made again.
    """

    def __init__(self, make: Callable[[], T], alive: Callable[[T], bool] | None = None) -> None:
        self._make = make
        self._alive = alive
        self._lock = threading.Lock()
        self._held: tuple[int, T] | None = None

    def _usable(self, held: tuple[int, T]) -> bool:
        return held[0] == os.getpid() and (self._alive is None or self._alive(held[1]))

    def get(self) -> T:
        """This process's value, made now if there is none yet."""
        held = self._held  # one read: another thread may replace it meanwhile
        if held is not None and self._usable(held):
            return held[1]
        with self._lock:
            held = self._held
            if held is not None and self._usable(held):
                return held[1]
            # None yet, or inherited from the parent of a fork: make our own.
            value = self._make()
            self._held = (os.getpid(), value)
            return value

    def latest(self) -> T | None:
        """The value made last, unchecked: for code that runs on what that value made
        (the coroutines on a loop made in this process)."""
        held = self._held
        return held[1] if held is not None else None


def blocking_pool(pool_class: Any, host: dict[str, Any]) -> Any:
    """A ``pool_class`` (redis-py's sync or asyncio ``BlockingConnectionPool``) for the
    layer's address ``host`` entry, waiting when all its connections are busy."""
    options = {key: value for key, value in host.items() if key != "address"}
    if not issubclass(pool_class, redis.asyncio.ConnectionPool):  # sync: its own Retry
        options = sync_client_options(options)
    return pool_class.from_url(
        host["address"], max_connections=POOL_SIZE, timeout=POOL_WAIT_S, **options
    )


def sync_client_options(options: dict[str, Any]) -> dict[str, Any]:
    """A layer host's options (made for asyncio pools) for a sync pool: the same retries."""
    retry = options.get("retry")
    if not isinstance(retry, AsyncRetry):
        return options
    return {**options, "retry": redis.retry.Retry(retry._backoff, retry.get_retries())}


def _async_pool(host: dict[str, Any]) -> redis.asyncio.ConnectionPool:
    """A pool for the layer's ``host`` entry, blocking when all its connections are busy.

    Each new connection first checks for a failover (``ws.failover``).
    """
    host = {**host, "redis_connect_func": notice_on_connect}
    if "address" not in host:  # Sentinel: channels-redis' own pool
        return create_pool(host)
    return blocking_pool(redis.asyncio.BlockingConnectionPool, host)


def _sync_pool(host: dict[str, Any], client_name: str) -> redis.ConnectionPool:
    """``_async_pool`` for redis-py's sync clients."""
    host = {**host, "client_name": client_name, "redis_connect_func": notice_on_connect_sync}
    if "address" in host:
        return blocking_pool(redis.BlockingConnectionPool, host)
    options = sync_client_options({k: v for k, v in host.items() if k not in _SENTINEL_ONLY})
    sentinels = redis.sentinel.Sentinel(host["sentinels"], sentinel_kwargs=host["sentinel_kwargs"])
    return redis.sentinel.SentinelConnectionPool(host["master_name"], sentinels, **options)
