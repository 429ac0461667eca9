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

This module must not import Django: settings use it before Django is set up.
"""

from __future__ import annotations

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
