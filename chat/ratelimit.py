"""Per-user limits (chat messages, call renegotiations), counted in Redis across every process.

A sliding window per key (``take``: at most ``CHAT_RATE_MESSAGES`` messages in
any ``CHAT_RATE_WINDOW_S`` seconds; ``take_from``: any key, limit and window).
One Lua script checks and records, so two
processes racing for the last slot cannot both take it; Redis' own clock
timestamps the entries, so the processes' clocks need not agree.
"""

from __future__ import annotations

import secrets

from django.conf import settings

from ws.conf import redis_key
from ws.publisher import run_script

__all__ = ["take", "take_from"]

# KEYS[1] the user's window (a sorted set of send times, µs). ARGV[1] the limit,
# ARGV[2] the window (ms), ARGV[3] a unique member. Returns 0 when the message may
# go (and records it), else the µs until the oldest entry leaves the window.
_TAKE_LUA = """
redis.replicate_commands()  -- Redis < 7: TIME before writes needs effects replication
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local window = tonumber(ARGV[2]) * 1000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
"""


def take(user_id: object) -> float:
    """Record one message of ``user_id``; 0 if allowed, else seconds until one is."""
    limit, window_s = settings.CHAT_RATE_MESSAGES, settings.CHAT_RATE_WINDOW_S
    return take_from(f"chat:rate:{user_id}", limit, window_s)


def take_from(key: str, limit: int, window_s: float) -> float:
    """Record one action in the window ``key``; 0 if allowed, else seconds until one is.

    At most ``limit`` actions in any ``window_s`` seconds, counted in Redis under
    ``PUSH_KEY_PREFIX`` (``push:chat:rate:7``).
    """
    args = [limit, max(1, int(window_s * 1000)), secrets.token_hex(8)]
    keys = [redis_key(key)]
    wait_us = run_script(_TAKE_LUA, keys, args)
    return int(wait_us) / 1_000_000
