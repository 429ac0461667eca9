"""The message store: how a topic's messages are numbered, kept, published and resumed.

Why a script: the topic's next ``seq``, its history entry and the publish to
the channel layer happen in one atomic step inside Redis, so two processes
pushing to the same topic can never deliver seq N+1 before seq N.

The publish script publishes to the channel the ``RedisPubSubChannelLayer``
listens on for the group (``group_channel``), in the layer's msgpack wire
format; consumers receive it through the layer like any group message
(``tests/ws/test_wire_contract.py`` holds channels-redis to that). The scripts
run through the publishers (``ws/publisher.py`` for async code and everything
but pushes, ``ws/publisher_sync.py`` for pushes from sync code); this module
holds what they send and how to read the answer.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ws import keys
from ws.conf import push_settings
from ws.failover import GENERATION_KEY, GENERATION_LUA
from ws.topics import Retention

__all__ = [
    "PUBLISH_LUA",
    "PUBLISH_MANY_LUA",
    "PUSH_EVENT_TYPE",
    "RESUME_LUA",
    "Batch",
    "Outgoing",
    "Position",
    "PublishCall",
    "PublishManyCall",
    "Resume",
    "ResumeCall",
    "default_retention",
    "group_channel",
]

PUSH_EVENT_TYPE = "push.message"

# Shared by the scripts: ``ensure_epoch(meta, history, new_epoch)`` for a topic's meta hash
# {seq, epoch, g, pe, ps} and its history stream, ``new_epoch`` the epoch to give a topic
# that has none; ``generation`` is set before (ws/failover.py). Returns the ``epoch``,
# and ``continued_epoch`` and ``continued_seq``: the epoch before the last failover and
# the last seq that survived it.
_ENSURE_EPOCH_FUNCTION = """
local function ensure_epoch(meta_key, history_key, new_epoch)
  local meta = redis.call('HMGET', meta_key, 'epoch', 'g', 'pe', 'ps')
  local epoch = meta[1]
  local continued_epoch, continued_seq = meta[3], tonumber(meta[4] or -1)
  if not epoch then
    -- A new (or lost and recreated) topic: its old history, if any, is not ours.
    epoch = new_epoch
    redis.call('HSET', meta_key, 'epoch', epoch, 'g', generation)
    redis.call('DEL', history_key)
  elseif (meta[2] or '') ~= generation then
    -- Written before a failover: messages after this seq may be lost with the old
    -- master, and their numbers are given again. A new epoch: a subscriber that saw no
    -- further than this seq goes on (its history continues), one that saw more is reset.
    continued_epoch = epoch
    continued_seq = tonumber(redis.call('HGET', meta_key, 'seq') or 0)
    epoch = new_epoch
    redis.call('HSET', meta_key, 'epoch', epoch, 'g', generation,
               'pe', continued_epoch, 'ps', continued_seq)
  end
  return epoch, continued_epoch, continued_seq
end
"""

# For one topic: KEYS[1] its meta hash, KEYS[2] its history, ARGV[1] the epoch to give it.
_ENSURE_EPOCH_LUA = (
    _ENSURE_EPOCH_FUNCTION
    + "local epoch, continued_epoch, continued_seq = ensure_epoch(KEYS[1], KEYS[2], ARGV[1])\n"
)

# KEYS[1] topic meta hash {seq, epoch, g}; KEYS[2] topic history stream; KEYS[3] the
# record of an idempotency key; KEYS[4] the failover generation (ws/failover.py); KEYS[5]
# this second's push counter (pushes per second, every process counted).
# ARGV[1] epoch for a topic that has none; ARGV[2] message body (JSON members);
# ARGV[3] layer channel of the group; ARGV[4] topic; ARGV[5] history size;
# ARGV[6] event type; ARGV[7] time in ms; ARGV[8] seconds an idle history is kept;
# ARGV[9] the idempotency key ('' for none); ARGV[10] seconds the key is remembered.
PUBLISH_LUA = (
    """
if ARGV[9] ~= '' then
  local done = redis.call('GET', KEYS[3])
  if done then  -- this event was pushed already (a re-run task): same answer, no push
    local sep = string.find(done, ':')
    return {tonumber(string.sub(done, 1, sep - 1)), string.sub(done, sep + 1)}
  end
end
"""
    + GENERATION_LUA.format(index=4)
    + _ENSURE_EPOCH_LUA
    + """
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local size = tonumber(ARGV[5])
if size > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', size, seq .. '-0', 'b', ARGV[2], 't', ARGV[7])
  redis.call('EXPIRE', KEYS[2], ARGV[8])
end
redis.call('PUBLISH', ARGV[3], cmsgpack.pack({
  type = ARGV[6], topic = ARGV[4], seq = seq, epoch = epoch, body = ARGV[2]}))
if ARGV[9] ~= '' then
  redis.call('SET', KEYS[3], seq .. ':' .. epoch, 'EX', ARGV[10])
end
redis.call('INCR', KEYS[5])
redis.call('EXPIRE', KEYS[5], 120)
return {seq, epoch}
"""
)

# Many pushes on one shard in one command. KEYS[1] the failover generation; KEYS[2] this
# second's push counter; then per topic its meta hash and history, then the record of the
# idempotency key of each of its keyed messages. ARGV[1] time in ms; ARGV[2] event type;
# ARGV[3] seconds a key is remembered; then per topic: topic, layer channel, epoch for a
# topic that has none, history size, seconds an idle history is kept, message count, and
# per message its body and idempotency key ('' for none). Returns, topic after topic and
# in each topic's order, each message's seq and epoch (a repeated key: the first push's).
PUBLISH_MANY_LUA = (
    GENERATION_LUA.format(index=1)
    + _ENSURE_EPOCH_FUNCTION
    + """
local out, pushed = {}, 0
local a, k = 4, 3
while a <= #ARGV do
  local topic, channel, size = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 3])
  local idle_s, count = ARGV[a + 4], tonumber(ARGV[a + 5])
  local meta_key, history_key = KEYS[k], KEYS[k + 1]
  local epoch = ensure_epoch(meta_key, history_key, ARGV[a + 2])
  a, k = a + 6, k + 2
  local stored = false
  for _ = 1, count do
    local body, key = ARGV[a], ARGV[a + 1]
    a = a + 2
    local record_key, done = nil, false
    if key ~= '' then
      record_key = KEYS[k]
      k = k + 1
      done = redis.call('GET', record_key)
    end
    if done then  -- pushed already (a re-run task): the same answer, no push
      local sep = string.find(done, ':')
      table.insert(out, tonumber(string.sub(done, 1, sep - 1)))
      table.insert(out, string.sub(done, sep + 1))
    else
      local seq = redis.call('HINCRBY', meta_key, 'seq', 1)
      if size > 0 then
        redis.call('XADD', history_key, 'MAXLEN', size, seq .. '-0', 'b', body, 't', ARGV[1])
        stored = true
      end
      redis.call('PUBLISH', channel, cmsgpack.pack({
        type = ARGV[2], topic = topic, seq = seq, epoch = epoch, body = body}))
      if record_key then
        redis.call('SET', record_key, seq .. ':' .. epoch, 'EX', ARGV[3])
      end
      pushed = pushed + 1
      table.insert(out, seq)
      table.insert(out, epoch)
    end
  end
  if stored then
    redis.call('EXPIRE', history_key, idle_s)
  end
end
if pushed > 0 then
  redis.call('INCRBY', KEYS[2], pushed)
  redis.call('EXPIRE', KEYS[2], 120)
end
return out
"""
)

# Resume: KEYS[1], KEYS[2] as above, KEYS[3] the failover generation. ARGV[1] epoch for
# a topic that has none; ARGV[2] the client's last seq (-1: none); ARGV[3] the client's
# epoch; ARGV[4] replay limit;
# ARGV[5] oldest entry time (ms) that may be replayed; ARGV[6] '1' for a snapshot on reset.
# Returns {seq, epoch, recovered, continued, id1, fields1, id2, fields2, ...}: on recovery
# the missed entries in order (all of them, or none: never a partial replay); on reset
# the last entry as the snapshot, if asked for and kept. ``continued``: the client's epoch
# was the one before a failover and what it saw survived it.
RESUME_LUA = (
    GENERATION_LUA.format(index=3)
    + _ENSURE_EPOCH_LUA
    + """
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or 0)
local since = tonumber(ARGV[2])
local function reset()
  local out = {seq, epoch, 0, 0}
  if ARGV[6] == '1' and seq > 0 then
    local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
    if #last == 1 then
      table.insert(out, last[1][1])
      table.insert(out, last[1][2])
    end
  end
  return out
end
local continued = 0
if ARGV[3] ~= epoch and ARGV[3] == continued_epoch and since >= 0 and since <= continued_seq then
  continued = 1
elseif ARGV[3] ~= epoch then
  return reset()
end
if since < 0 or since > seq or seq - since > tonumber(ARGV[4]) then
  return reset()
end
if since == seq then
  return {seq, epoch, 1, continued}
end
local entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', seq .. '-0')
if #entries ~= seq - since or tonumber(entries[1][2][4]) < tonumber(ARGV[5]) then
  return reset()  -- trimmed by count, or too old to replay
end
local out = {seq, epoch, 1, continued}
for _, entry in ipairs(entries) do
  table.insert(out, entry[1])
  table.insert(out, entry[2])
end
return out
"""
)


@dataclass(frozen=True)
class Position:
    """Where a topic stands: its last ``seq`` and the ``epoch`` of its history."""

    seq: int
    epoch: str

    def step_to(self, seq: int, epoch: str) -> Literal["sent", "next", "gap"]:
        """What a message (``seq``, ``epoch``) is to a socket that was sent ``self``.

        ``sent``: it has it already (a replay covered it); ``next``: the one that
        follows; ``gap``: messages were lost on the way (Redis restarted, a queue
        overflowed) or the history began again (a flush): catch up from history.
        """
        if epoch == self.epoch and seq <= self.seq:
            return "sent"
        if epoch == self.epoch and seq == self.seq + 1:
            return "next"
        return "gap"


class Outgoing(Protocol):
    """What publishing one push needs: its topic, group, encoded body, key, retention."""

    topic: str
    group: str
    body: str
    key: str
    retention: Retention


# Messages per command of a batch: one command runs alone in Redis, so a long batch goes
# in several, one after the other (a few milliseconds each), each topic still in order.
BATCH_COMMAND_MAX = 500


@dataclass(frozen=True)
class PublishManyCall:
    """``PUBLISH_MANY_LUA``'s keys and arguments for pushes on one shard, and which push
    of the batch each answer pair is for."""

    keys: list[str]
    args: list[Any]
    order: list[int]

    @classmethod
    def make(cls, pushes: Sequence[tuple[int, Outgoing]], prefix: str) -> PublishManyCall:
        """The call for ``(index in the batch, push)`` pairs, all on one shard."""
        now = time.time()
        by_topic: dict[str, list[tuple[int, Outgoing]]] = {}
        for n, one in pushes:
            by_topic.setdefault(one.topic, []).append((n, one))
        call_keys: list[str] = [GENERATION_KEY, keys.pushes(int(now))]
        args: list[Any] = [int(now * 1000), PUSH_EVENT_TYPE, push_settings.PUSH_HISTORY_TTL_S]
        order: list[int] = []
        for topic, messages in by_topic.items():
            first = messages[0][1]
            stored = keys.topic(topic)
            call_keys += [stored.meta, stored.history]
            retention = first.retention
            channel = group_channel(prefix, first.group)
            args += [topic, channel, _new_epoch(), retention.size, retention.ttl_s, len(messages)]
            for n, one in messages:
                args += [one.body, one.key]
                if one.key:
                    call_keys.append(stored.record(one.key))
                order.append(n)
        return cls(call_keys, args, order)


@dataclass
class Batch:
    """A batch of pushes as commands per shard (in the batch's order), and their answers."""

    calls: dict[int, list[PublishManyCall]]
    results: list[Position | None]

    @classmethod
    def of(cls, pushes: Sequence[Outgoing], prefix: str, shard_of: Callable[[str], int]) -> Batch:
        by_shard: dict[int, list[tuple[int, Outgoing]]] = {}
        for n, one in enumerate(pushes):
            by_shard.setdefault(shard_of(group_channel(prefix, one.group)), []).append((n, one))
        calls = {
            shard: [
                PublishManyCall.make(entries[start : start + BATCH_COMMAND_MAX], prefix)
                for start in range(0, len(entries), BATCH_COMMAND_MAX)
            ]
            for shard, entries in by_shard.items()
        }
        return cls(calls, [None] * len(pushes))

    def answered(self, call: PublishManyCall, reply: Sequence[Any]) -> None:
        """The script's answer to ``call``: a ``seq`` and an ``epoch`` per push."""
        pairs = zip(reply[0::2], reply[1::2], strict=True)
        for n, (seq, epoch) in zip(call.order, pairs, strict=True):
            self.results[n] = Position(int(seq), text(epoch))

    def positions(self) -> list[Position]:
        """Each push's position, in the batch's order (once every call is answered)."""
        assert all(position is not None for position in self.results), "a call unanswered"
        return [position for position in self.results if position is not None]


@dataclass(frozen=True)
class Resume:
    """What a subscriber is owed: its position, and the missed messages or a snapshot.

    ``recovered``: ``messages`` are exactly the missed ones, in order (in the new
    epoch after a failover, when ``continues``). Otherwise ``snapshot`` is the latest
    message (state-like topics), or None.
    """

    position: Position
    recovered: bool
    messages: list[tuple[int, str]]
    snapshot: tuple[int, str] | None
    # The client's epoch, when the topic's epoch changed at a failover and all the client
    # saw survived it: its history goes on in ``position.epoch``.
    continues: str | None = None


def default_retention() -> Retention:
    """The history kept for a topic with no size or age of its own (the settings')."""
    return Retention(size=push_settings.PUSH_HISTORY_SIZE, ttl_s=push_settings.PUSH_HISTORY_TTL_S)


def group_channel(prefix: str, group: str) -> str:
    """The pub/sub channel of a layer group, as ``RedisPubSubLoopLayer`` names it."""
    return f"{prefix}__group__{group}"


def _new_epoch() -> str:
    return secrets.token_hex(6)


@dataclass(frozen=True)
class PublishCall:
    """The publish script's keys and arguments for one push.

    One command per push: the script also counts it (pushes per second). Not in a
    pipeline, where redis-py asks ``SCRIPT EXISTS`` before every execute, a round
    trip more than the push itself; a bare ``EVALSHA`` loads the script only when
    Redis answers ``NOSCRIPT`` (a new or restarted server).
    """

    keys: list[str]
    args: list[Any]

    @classmethod
    def make(
        cls, topic: str, channel: str, body: str, key: str, retention: Retention
    ) -> PublishCall:
        now = time.time()
        args = [
            _new_epoch(),
            body,
            channel,
            topic,
            retention.size,
            PUSH_EVENT_TYPE,
            int(now * 1000),
            retention.ttl_s,
            key,
            push_settings.PUSH_HISTORY_TTL_S,
        ]
        stored = keys.topic(topic)
        call_keys = [
            stored.meta,
            stored.history,
            stored.record(key),
            GENERATION_KEY,
            keys.pushes(int(now)),
        ]
        return cls(call_keys, args)


@dataclass(frozen=True)
class ResumeCall:
    """The resume script's keys and arguments for a client at (``since``, ``epoch``)."""

    keys: list[str]
    args: list[Any]
    epoch: str | None

    @classmethod
    def make(
        cls,
        topic: str,
        since: int | None,
        epoch: str | None,
        snapshot: bool,
        retention: Retention,
    ) -> ResumeCall:
        stored = keys.topic(topic)
        oldest_ms = int((time.time() - retention.ttl_s) * 1000)
        args = [
            _new_epoch(),
            -1 if since is None else since,
            epoch or "",
            push_settings.PUSH_REPLAY_LIMIT,
            oldest_ms,
            "1" if snapshot else "0",
        ]
        return cls([stored.meta, stored.history, GENERATION_KEY], args, epoch)

    def read(self, answer: list[Any]) -> Resume:
        """The script's answer as a ``Resume``."""
        position = Position(int(answer[0]), text(answer[1]))
        entries = _entries(answer[4:])
        if answer[2]:
            return Resume(position, True, entries, None, self.epoch if answer[3] else None)
        return Resume(position, False, [], entries[0] if entries else None)


def _entries(flat: list[Any]) -> list[tuple[int, str]]:
    """Stream entries ``id, [b, body, t, time]`` as ``(seq, body)``."""
    return [
        (int(text(flat[i]).split("-")[0]), text(flat[i + 1][1])) for i in range(0, len(flat), 2)
    ]


def text(value: bytes | str) -> str:
    """A Redis answer as text (clients may or may not decode their answers)."""
    return value.decode() if isinstance(value, bytes) else value
