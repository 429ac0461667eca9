"""Presence: who is subscribed to a topic, across every server process.

Topics opt in (``chat.<room>``, ``call.<id>``, or ``topics.declare(name,
presence=True)``). A member is a user, not a socket: ``{"id": "user:7",
"name": "alice"}``; an anonymous socket is a member of its own
(``{"id": "guest:<hash>", "name": "guest"}``). A user with three sockets on a
topic joins when the first subscribes and leaves when the last one goes.

Everything lives in Redis, per topic, under one hash tag ``{topic}`` (so on one
Cluster slot, beside the topic's history; ``ws.keys.topic(T).presence``):

- ``push:{T}:p:conns``  zset: socket (channel name) -> expiry (ms, Redis' clock);
- ``push:{T}:p:member`` hash: socket -> member id;
- ``push:{T}:p:count``  hash: member id -> its live sockets;
- ``push:{T}:p:json``   hash: member id -> the member as JSON.

Every change is one Lua script, so a member's count and the ``presence.join``
/ ``presence.leave`` event it implies change together: exactly one process
announces each join and each leave, however many race. The script PUBLISHes
the event to the topic's group in the channel layer's msgpack format, as the
push script does, and consumers forward it to their sockets.

Liveness: each server process refreshes the expiry of its own sockets every
``PUSH_PRESENCE_REFRESH_S`` to ``PUSH_PRESENCE_TTL_S`` ahead; a process that
dies stops refreshing. Every script first sweeps the topic's expired sockets
(announcing the leaves they imply), and each process sweeps the topics its own
sockets are on at each refresh: whoever can still hear a ``leave`` is the one
who sweeps. A topic that no live process holds needs no sweeper: the next
subscriber's join sweeps it before answering, and its keys expire by
themselves. (So there is no registry of presence topics: no key shared by all
topics, nothing to walk, nothing cross-slot in Cluster.)

The refresh is also a re-join: a socket whose entry was swept while its process
stalled, or lost with Redis, is added (and announced) again.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, TypedDict

from ws import keys, topics
from ws.conf import push_settings
from ws.outage import REDIS_UNAVAILABLE, redis_outage
from ws.publisher import publisher
from ws.signals import presence_left

__all__ = ["Member", "is_present", "join", "leave", "live_members", "member_for"]

logger = logging.getLogger("ws")

JOIN_EVENT = "presence.join"
LEAVE_EVENT = "presence.leave"
# Sockets per refresh script: a script blocks Redis while it runs.
_REFRESH_BATCH = 500


class Member(TypedDict):
    """Who is present: a user (``user:<pk>``) or one anonymous socket (``guest:...``)."""

    id: str
    name: str


def member_for(user: Any, conn: str) -> Member:
    """The member that socket ``conn`` of ``user`` counts as."""
    if user is not None and user.is_authenticated:
        return Member(id=f"user:{user.pk}", name=user.get_username())
    # Not the channel name itself: other clients must not learn it.
    return Member(id="guest:" + hashlib.sha256(conn.encode()).hexdigest()[:16], name="guest")


def _keys(topic: str) -> list[str]:
    return list(keys.topic(topic).presence)


# KEYS: the topic's four keys (see the module's docstring). ARGV[1] the layer channel
# of the topic's group (given by run_group_script), ARGV[2] the topic.
# Sweeps the topic's expired sockets; leaves ``now`` (ms, Redis' clock: one clock
# for every process, however theirs drift) and ``drop(conn)`` to the script after it.
_SWEEP_LUA = """
redis.replicate_commands()  -- Redis < 7: TIME before writes needs effects replication
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local left = {}  -- the members whose last socket this script removed
local function announce(kind, member)
  redis.call('PUBLISH', ARGV[1], cmsgpack.pack({type = kind, topic = ARGV[2], member = member}))
end
local function drop(conn)
  redis.call('ZREM', KEYS[1], conn)
  local id = redis.call('HGET', KEYS[2], conn)
  if not id then return end
  redis.call('HDEL', KEYS[2], conn)
  if redis.call('HINCRBY', KEYS[3], id, -1) <= 0 then  -- the member's last socket
    redis.call('HDEL', KEYS[3], id)
    local member = redis.call('HGET', KEYS[4], id)
    redis.call('HDEL', KEYS[4], id)
    if member then
      announce('presence.leave', member)
      table.insert(left, member)
    end
  end
end
for _, conn in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  drop(conn)
end
"""

# Join or refresh. ARGV[3] the TTL (ms); ARGV[4] '1' to return the member list;
# then (socket, member id, member JSON) triples. A socket not yet present is added
# and its member's count raised (announced when it becomes 1); one present gets
# a new expiry. Returns [the members' JSON, the swept leaves' JSON] when asked for
# the list, else the swept leaves' JSON.
_JOIN_LUA = (
    _SWEEP_LUA
    + """
local ttl = tonumber(ARGV[3])
for i = 5, #ARGV, 3 do
  local conn, id = ARGV[i], ARGV[i + 1]
  if redis.call('ZADD', KEYS[1], now + ttl, conn) == 1 then
    redis.call('HSET', KEYS[2], conn, id)
    if redis.call('HINCRBY', KEYS[3], id, 1) == 1 then
      redis.call('HSET', KEYS[4], id, ARGV[i + 2])
      announce('presence.join', ARGV[i + 2])
    end
  end
end
-- A topic whose every process died is not swept by anyone: its keys expire.
for i = 1, 4 do
  redis.call('PEXPIRE', KEYS[i], 2 * ttl)
end
if ARGV[4] == '1' then
  return {redis.call('HVALS', KEYS[4]), left}
end
return left
"""
)

# Leave. ARGV[3] the socket. Returns the leaves' JSON (swept ones included).
_LEAVE_LUA = _SWEEP_LUA + "drop(ARGV[3])\nreturn left\n"

# Whether a member has a live socket entry. ARGV[3] the member id.
_PRESENT_LUA = "return redis.call('HEXISTS', KEYS[3], ARGV[3])"

# The member ids of the sockets not expired yet (one per socket). Reads only: the
# expired ones are left for a sweep that can announce them (see the module's docstring).
_LIVE_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local ids = {}
for _, conn in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')) do
  local id = redis.call('HGET', KEYS[2], conn)
  if id then table.insert(ids, id) end
end
return ids
"""


async def _script(topic: str, lua: str, args: list[Any]) -> Any:
    group = topics.group_name(topic)
    return await publisher.arun(
        lambda: publisher.run_group_script(group, lua, _keys(topic), [topic, *args])
    )


def _ttl_ms() -> int:
    return int(push_settings.PUSH_PRESENCE_TTL_S * 1000)


async def _announce_left(topic: str, left: list[Any]) -> None:
    """Tell other apps (``ws.signals.presence_left``) who left; their errors are only logged."""
    for item in left:
        member = json.loads(item)
        answers = await presence_left.asend_robust(sender=Presence, topic=topic, member=member)
        for receiver, answer in answers:
            if isinstance(answer, Exception):
                logger.warning("ws presence_left receiver %r failed: %r", receiver, answer)


@dataclass
class _Held:
    """This process's sockets on one topic, and the lock that orders its scripts.

    The lock keeps a refresh from re-adding a socket whose leave ran in between.
    """

    conns: dict[str, tuple[str, str]] = field(default_factory=dict)  # conn -> (id, JSON)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Presence:
    """This process's sockets on presence topics, and the task that keeps them alive.

    Per process (and event loop) by nature: it holds what only this process
    knows, its own sockets, and keeps their entries in Redis current.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._held: dict[str, _Held] = {}
        self._task: asyncio.Task[None] | None = None

    def _here(self) -> dict[str, _Held]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # first use, or a new loop (tests): start afresh
            self._loop, self._held, self._task = loop, {}, None
        return self._held

    async def join(self, topic: str, conn: str, member: Member) -> list[Member]:
        """Add socket ``conn`` to ``topic`` as ``member``; the topic's members, by id."""
        held = self._here().setdefault(topic, _Held())
        # Held before the script: from here on the refresh keeps it alive.
        held.conns[conn] = (member["id"], json.dumps(member))
        self._keep_alive()
        try:
            async with held.lock:
                found, left = await _script(
                    topic, _JOIN_LUA, [_ttl_ms(), "1", conn, *held.conns[conn]]
                )
        except BaseException:
            # Not refreshed: if the script did add it, the entry expires and is swept.
            self._forget(topic, held, conn)
            raise
        members = [json.loads(item) for item in found]  # bytes or str: both parse
        await _announce_left(topic, left)
        return sorted(members, key=lambda member: member["id"])

    async def leave(self, topic: str, conn: str) -> None:
        """Remove socket ``conn`` from ``topic`` (announced if it was its member's last)."""
        held = self._here().get(topic)
        if held is None:
            left = await _script(topic, _LEAVE_LUA, [conn])
        else:
            async with held.lock:
                self._forget(topic, held, conn)
                left = await _script(topic, _LEAVE_LUA, [conn])
        await _announce_left(topic, left)

    def _forget(self, topic: str, held: _Held, conn: str) -> None:
        held.conns.pop(conn, None)
        if not held.conns and self._held.get(topic) is held:
            del self._held[topic]
        if not self._held and self._task is not None:
            self._task.cancel()  # nothing to keep alive; the next join starts another
            self._task = None

    def _keep_alive(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._refresh_forever(), name="push-presence")

    async def _refresh_forever(self) -> None:
        """Refresh and sweep, every ``PUSH_PRESENCE_REFRESH_S``, while sockets are held."""
        while True:
            await asyncio.sleep(push_settings.PUSH_PRESENCE_REFRESH_S)
            try:
                await self.refresh()
            except REDIS_UNAVAILABLE as error:  # next round; entries live for a TTL
                redis_outage.noticed(error, "refreshing presence")
            except Exception:
                logger.warning("ws presence refresh failed; retrying", exc_info=True)

    async def refresh(self) -> None:
        """Push this process's entries' expiry forward and sweep their topics."""
        for topic, held in list(self._held.items()):
            left: list[Any] = []
            async with held.lock:
                entries = [(conn, *member) for conn, member in held.conns.items()]
                for start in range(0, len(entries), _REFRESH_BATCH):
                    batch = entries[start : start + _REFRESH_BATCH]
                    args = [item for entry in batch for item in entry]
                    left += await _script(topic, _JOIN_LUA, [_ttl_ms(), "0", *args])
            await _announce_left(topic, left)


presence = Presence()


async def join(topic: str, conn: str, member: Member) -> list[Member]:
    """Add socket ``conn`` to ``topic``'s presence as ``member``; the members now there."""
    return await presence.join(topic, conn, member)


async def leave(topic: str, conn: str) -> None:
    """Remove socket ``conn`` from ``topic``'s presence."""
    await presence.leave(topic, conn)


def is_present(topic: str, member_id: str) -> bool:
    """Whether ``member_id`` (``"user:7"``) has a socket on ``topic`` now (sync code).

    An entry of a dead process counts until it is swept (within about a TTL).
    """
    group = topics.group_name(topic)
    found = publisher.run(
        lambda: publisher.run_group_script(group, _PRESENT_LUA, _keys(topic), [topic, member_id])
    )
    return bool(found)


def live_members(topic: str) -> set[str]:
    """The ids of the members with a live socket on ``topic`` now (sync code).

    Unlike ``is_present``, an entry not refreshed for ``PUSH_PRESENCE_TTL_S``
    (its process died, or stalled that long) does not count, swept or not: for
    a sweeper of its own, such as one that runs where no server process holds
    the topic. It removes nothing and announces nothing.
    """
    group = topics.group_name(topic)
    found = publisher.run(
        lambda: publisher.run_group_script(group, _LIVE_LUA, _keys(topic), [topic])
    )
    return {item.decode() if isinstance(item, bytes) else item for item in found}
