"""Per-socket and per-user limits, with safe defaults in settings.

- ``PUSH_MAX_SUBSCRIPTIONS`` topics per socket;
- ``PUSH_RATE_PER_S`` inbound frames per second per socket, with bursts up to
  ``PUSH_RATE_BURST`` (a token bucket); a socket that keeps flooding after
  ``PUSH_RATE_MAX_REFUSED`` refused frames is closed;
- ``PUSH_MAX_CONNECTIONS_PER_USER`` open sockets per signed-in user, counted in
  Redis across every server process. Each socket's entry expires unless
  refreshed, so a crashed process cannot lock its users out for long.

Every breach is answered with code 4429.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ws import keys
from ws.conf import push_settings
from ws.publisher import arun_script

CONNECTION_TTL_S = 120

# KEYS[1] the user's open sockets (zset: socket -> expiry); ARGV: socket, now, ttl, max.
_CLAIM_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) == false
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2] + ARGV[3], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
_RELEASE_LUA = "return redis.call('ZREM', KEYS[1], ARGV[1])"


@dataclass
class FrameRate:
    """A token bucket: ``rate`` frames a second, bursts up to ``burst``."""

    rate: float
    burst: float
    tokens: float = field(init=False)
    stamp: float = field(default_factory=time.monotonic)
    refused: int = 0

    def __post_init__(self) -> None:
        self.tokens = self.burst

    @classmethod
    def from_settings(cls) -> FrameRate:
        return cls(rate=push_settings.PUSH_RATE_PER_S, burst=push_settings.PUSH_RATE_BURST)

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.refused += 1
        return False


async def claim_connection(user_id: object, socket: str) -> bool:
    """Count ``socket`` as one of the user's; False when they have too many already."""
    claimed = await arun_script(
        _CLAIM_LUA,
        [keys.user_sockets(user_id)],
        [socket, int(time.time()), CONNECTION_TTL_S, push_settings.PUSH_MAX_CONNECTIONS_PER_USER],
    )
    return bool(claimed)


async def release_connection(user_id: object, socket: str) -> None:
    await arun_script(_RELEASE_LUA, [keys.user_sockets(user_id)], [socket])
