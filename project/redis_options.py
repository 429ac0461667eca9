"""How every Redis client of the project connects: timeouts and retries, in one place.

The channel layer, the push publisher (and through it history, presence, rate
limits, the census and the per-user socket count) all build their pools from
the layer's host entries in ``CHANNEL_LAYERS``, so what is set here reaches
every Redis path of a web process and of a worker.

Why retry with backoff, and not health checks or dropping idle connections:
after Redis restarts (or fails over), every pooled connection still points at
the old server and fails on first use ("Connection closed by server"). A
health check (redis-py's ``health_check_interval``) PINGs a connection idle for
longer than its interval before using it: a round trip, and a restart shorter
than the interval slips through. Dropping a pool's idle connections on the
first error needs a pool of our own and still fails that first request.
redis-py's ``Retry`` reconnects the connection that failed and sends the
command again, with exponential backoff and jitter, so no request of a client
meets a stale connection, and a short outage is ridden out inside the request.
Sending again is safe: a command written to a connection the server had
closed never ran. The one ambiguous case is a server that dies between running
a command and answering it; pushes made with ``key=`` are exactly-once even then.

Where the Redis servers are (``layer_hosts``, ``celery_url``): one ``REDIS_URL``;
or several, ``REDIS_SHARD_URLS``, across which the channel layer and the push
state shard (channels-redis hashes each channel to one of its hosts, and the
publisher keeps a topic's numbering and history on its group channel's shard);
or Sentinel, ``REDIS_SENTINELS`` with ``REDIS_SENTINEL_MASTER`` (one master
name, or several: one shard each). Celery's broker and results use the first.

This module must not import Django: settings use it before Django is set up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialWithJitterBackoff

# The first retry waits up to this long; each next one twice as long, up to the cap.
FIRST_BACKOFF_S = 0.05


def async_client_options(retries: int, backoff_cap_s: float) -> dict[str, Any]:
    """Options for an asyncio Redis pool (a channel layer host entry takes them as they are)."""
    return {
        # redis-py 8 defaults to 5 s timeouts; name them so a slow link shows up as an
        # error rather than a hang.
        "socket_connect_timeout": 5,
        "socket_timeout": 10,
        # A PING on a connection idle this long before it is used: the layer's pub/sub
        # connection, idle between messages, finds a link that died silently.
        "health_check_interval": 15,
        "retry": AsyncRetry(ExponentialWithJitterBackoff(backoff_cap_s, FIRST_BACKOFF_S), retries),
    }


@dataclass(frozen=True)
class RedisPlace:
    """Where this deployment's Redis is: URLs (one, or one per shard), or Sentinel."""

    urls: tuple[str, ...] = ()
    sentinels: tuple[tuple[str, int], ...] = ()
    masters: tuple[str, ...] = ()

    @classmethod
    def from_values(
        cls, url: str, shard_urls: list[str], sentinels: list[str], masters: list[str]
    ) -> RedisPlace:
        """Check the settings' values; ``ValueError`` names the one that is wrong."""
        if sentinels:
            if shard_urls:
                raise ValueError(
                    "set REDIS_SENTINELS or REDIS_SHARD_URLS, not both (with Sentinel, "
                    "shard by naming several masters in REDIS_SENTINEL_MASTER)"
                )
            if not masters or len(set(masters)) != len(masters):
                raise ValueError("REDIS_SENTINEL_MASTER must name one master or more, each once")
            return cls(
                sentinels=tuple(_host_port(entry) for entry in sentinels), masters=tuple(masters)
            )
        urls = tuple(shard_urls) or (url,)
        for each in urls:
            if not each.startswith(("redis://", "rediss://", "unix://")):
                raise ValueError(
                    f"a Redis URL must start redis://, rediss:// or unix://, got {each!r}"
                )
        if len(set(urls)) != len(urls):
            raise ValueError("REDIS_SHARD_URLS names a server twice")
        return cls(urls=urls)

    def layer_hosts(self, options: dict[str, Any]) -> list[dict[str, Any]]:
        """The channel layer's ``hosts``: one entry per shard, each with ``options``."""
        if self.sentinels:
            return [
                {
                    "sentinels": list(self.sentinels),
                    "master_name": master,
                    # Asking a sentinel where the master is: quick, or the next sentinel.
                    "sentinel_kwargs": {"socket_connect_timeout": 1, "socket_timeout": 1},
                    **options,
                }
                for master in self.masters
            ]
        return [{"address": url, **options} for url in self.urls]

    def celery_url(self) -> str:
        """Celery's broker and result backend: the first shard, through Sentinel if set.

        With Sentinel, kombu and Celery take ``sentinel://`` URLs (one per sentinel,
        joined by ``;``) and the master's name from ``master_name`` in their
        transport options (``celery_transport_options``).
        """
        if self.sentinels:
            return ";".join(f"sentinel://{host}:{port}/0" for host, port in self.sentinels)
        return self.urls[0]

    def celery_transport_options(self) -> dict[str, Any]:
        return {"master_name": self.masters[0]} if self.sentinels else {}


def _host_port(entry: str) -> tuple[str, int]:
    host, _, port = entry.strip().rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"REDIS_SENTINELS entries must be host:port, got {entry!r}")
    return host.strip("[]"), int(port)
