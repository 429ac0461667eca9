"""Redis being away, as a server process tells it: one log line per outage, not one per socket.

While Redis is unreachable every socket's request that needs it fails the
same way. Each is answered with the retryable error ``4503`` (clients try
again with backoff), and this process's log says so once: a WARNING when the
first request fails, and one when Redis answers again (the layer watch's next
healthy check), with how many requests were turned away in between.

channels-redis' pub/sub reader logs a traceback every second while it cannot
reconnect; ``QuietReconnects`` counts those into the same outage instead.
"""

from __future__ import annotations

import logging
import time

from redis.exceptions import RedisError

logger = logging.getLogger("ws")

# What a request that needs Redis raises while Redis is away: redis-py wraps socket errors
# in its ConnectionError and TimeoutError. (Not OSError: a client that goes away while its
# socket is set up raises one, and that is not Redis.)
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (RedisError,)

TRY_AGAIN_MESSAGE = "temporarily unavailable (Redis): try again"


class RedisOutage:
    """This process's view of whether Redis is away, for logging it once."""

    def __init__(self) -> None:
        self.since: float | None = None
        self.refused = 0

    @property
    def active(self) -> bool:
        return self.since is not None

    def noticed(self, error: BaseException, what: str) -> None:
        """A request (``what``) failed because Redis is away: log it if it is the first."""
        self.refused += 1
        if self.since is None:
            self.since = time.monotonic()
            logger.warning(
                "ws Redis unavailable (%s failed: %s); answering 4503 until it is back",
                what,
                str(error) or type(error).__name__,
            )

    def ended(self) -> None:
        """Redis answers again (the layer watch checked): close the outage, if one was open."""
        if self.since is None:
            return
        logger.warning(
            "ws Redis is back after %.1f s; %d requests were answered 4503 meanwhile",
            time.monotonic() - self.since,
            self.refused,
        )
        self.since, self.refused = None, 0


redis_outage = RedisOutage()


class QuietReconnects(logging.Filter):
    """Counts channels-redis' reconnect tracebacks into the outage instead of logging each."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, REDIS_UNAVAILABLE):
            redis_outage.noticed(error, "the channel layer's subscription")
            return False
        return True
