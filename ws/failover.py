"""Noticing a failover, so that no topic goes on as if nothing was lost.

Redis replicates asynchronously: when Sentinel promotes a replica because its
master died, the last writes the master made (a push's number, its history
entry) may never have reached the replica, though subscribers already got
those pushes. The new master would number the next push as one they hold,
and they would drop it as a duplicate: a silent gap.

So every connection the push publisher opens first runs ``_NOTICE_LUA``. It
compares the server's replication id with the one recorded in Redis (a
replicated key): a master whose *previous* replication id (``master_replid2``,
set when a replica is promoted) is the recorded one has taken over from the
server the topics were written on. It then starts a new *generation*. The
publish and resume scripts compare each topic's generation with the current
one and, on a mismatch, give the topic a new epoch: every subscriber is told
where the topic stands (a reset, with the newest kept message as a snapshot
on state-like topics), never shown a gap as continuity.

A plain restart of one Redis (a new replication id, no previous one) changes
nothing: its append-only file kept what it had. The check runs before any
command on a new connection, so no push reaches a promoted master before the
new generation is set.
"""

from __future__ import annotations

import secrets
from typing import Any

from ws import keys

# Fixed when ws loads: every connection's check and every script agree on them.
REPLID_KEY = keys.replid()
GENERATION_KEY = keys.generation()

# KEYS[1] the recorded replication id, KEYS[2] the generation. ARGV[1] a new generation.
# Returns 1 when this server took over from the recorded one (a new generation began).
_NOTICE_LUA = """
local info = redis.call('INFO', 'replication')
if not string.find(info, 'role:master', 1, true) then
  return 0
end
local replid = string.match(info, 'master_replid:(%x+)')
local previous = string.match(info, 'master_replid2:(%x+)')
local known = redis.call('GET', KEYS[1])
if known == replid then
  return 0
end
redis.call('SET', KEYS[1], replid)
if known and known == previous then
  redis.call('SET', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

# For the topic scripts: the current generation ('' before any failover).
GENERATION_LUA = "local generation = redis.call('GET', KEYS[{index}]) or ''\n"


def _notice_command() -> tuple[Any, ...]:
    return ("EVAL", _NOTICE_LUA, 2, REPLID_KEY, GENERATION_KEY, secrets.token_hex(6))


async def notice_on_connect(connection: Any) -> None:
    """redis-py's ``redis_connect_func`` for asyncio connections: set up, then check."""
    await connection.on_connect()
    await connection.send_command(*_notice_command())
    await connection.read_response()


def notice_on_connect_sync(connection: Any) -> None:
    """``notice_on_connect`` for redis-py's sync connections."""
    connection.on_connect()
    connection.send_command(*_notice_command())
    connection.read_response()
