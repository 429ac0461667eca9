"""Numbering, storing and publishing messages: one Redis script, one loop per process.

Why a script: the topic's next ``seq``, its history entry and the publish to
the channel layer happen in one atomic step inside Redis, so two processes
pushing to the same topic can never deliver seq N+1 before seq N.

Why one loop per process: a redis-py asyncio pool belongs to the event loop
that made it, so ``async_to_sync`` per push would build and tear down a loop,
a thread and a TCP connection every time (see channels_redis' per-loop
layers). Here every push, from sync or async code, runs on a single
background loop that owns a single Redis client; a forked child (a Celery
prefork worker) builds its own on first use.

The script publishes to the channel the ``RedisPubSubChannelLayer`` listens on
for the group, in the layer's msgpack wire format; consumers receive it
through the layer like any group message.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import msgpack
import redis.retry
import redis.sentinel
from channels_redis.pubsub import RedisPubSubChannelLayer
from channels_redis.utils import _consistent_hash, create_pool, decode_hosts
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.commands.core import AsyncScript

from ws.conf import push_settings, redis_key
from ws.failover import (
    GENERATION_KEY,
    GENERATION_LUA,
    notice_on_connect,
    notice_on_connect_sync,
)
from ws.topics import Retention

T = TypeVar("T")

PUSH_EVENT_TYPE = "push.message"
PUBSUB_LAYER = "channels_redis.pubsub.RedisPubSubChannelLayer"

# Shared by both scripts: KEYS[1] is the topic's meta hash {seq, epoch, g, pe, ps}, KEYS[2]
# its history stream, ARGV[1] the epoch to give a topic that has none; ``generation`` is
# set before (ws/failover.py). Leaves ``epoch``, and ``continued_epoch`` and
# ``continued_seq``: the epoch before the last failover and the last seq that survived it.
_ENSURE_EPOCH_LUA = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'g', 'pe', 'ps')
local epoch = meta[1]
local continued_epoch, continued_seq = meta[3], tonumber(meta[4] or -1)
if not epoch then
  -- A new (or lost and recreated) topic: its old history, if any, is not ours.
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'g', generation)
  redis.call('DEL', KEYS[2])
elseif (meta[2] or '') ~= generation then
  -- Written before a failover: messages after this seq may be lost with the old master,
  -- and their numbers are given again. A new epoch: a subscriber that saw no further
  -- than this seq goes on (its history continues), one that saw more is reset.
  continued_epoch = epoch
  continued_seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or 0)
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch, 'g', generation,
             'pe', continued_epoch, 'ps', continued_seq)
end
"""

# KEYS[1] topic meta hash {seq, epoch, g}; KEYS[2] topic history stream; KEYS[3] the
# record of an idempotency key; KEYS[4] the failover generation (ws/failover.py); KEYS[5]
# this second's push counter (pushes per second, every process counted).
# ARGV[1] epoch for a topic that has none; ARGV[2] message body (JSON members);
# ARGV[3] layer channel of the group; ARGV[4] topic; ARGV[5] history size;
# ARGV[6] event type; ARGV[7] time in ms; ARGV[8] seconds an idle history is kept;
# ARGV[9] the idempotency key ('' for none); ARGV[10] seconds the key is remembered.
_PUBLISH_LUA = (
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

# Resume: KEYS[1], KEYS[2] as above, KEYS[3] the failover generation. ARGV[1] epoch for
# a topic that has none; ARGV[2] the client's last seq (-1: none); ARGV[3] the client's
# epoch; ARGV[4] replay limit;
# ARGV[5] oldest entry time (ms) that may be replayed; ARGV[6] '1' for a snapshot on reset.
# Returns {seq, epoch, recovered, continued, id1, fields1, id2, fields2, ...}: on recovery
# the missed entries in order (all of them, or none: never a partial replay); on reset
# the last entry as the snapshot, if asked for and kept. ``continued``: the client's epoch
# was the one before a failover and what it saw survived it.
_RESUME_LUA = (
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


# Pushes per second, every process counted: one counter per second, kept two minutes.
_RATE_KEY = redis_key("stats", "pushes")


def _default_retention() -> Retention:
    return Retention(size=push_settings.PUSH_HISTORY_SIZE, ttl_s=push_settings.PUSH_HISTORY_TTL_S)


def group_channel(prefix: str, group: str) -> str:
    """The pub/sub channel of a layer group, as ``RedisPubSubLoopLayer`` names it."""
    return f"{prefix}__group__{group}"


def _new_epoch() -> str:
    return secrets.token_hex(6)


def _meta_keys(topic: str) -> list[str]:
    # The hash tag keeps both keys of a topic on one Redis Cluster slot.
    return [redis_key(f"{{{topic}}}"), redis_key(f"{{{topic}}}", "h")]


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
        rate_key = f"{_RATE_KEY}:{int(now)}"
        keys = [*_meta_keys(topic), redis_key(f"{{{topic}}}", "k", key), GENERATION_KEY, rate_key]
        return cls(keys, args)


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


def _entries(flat: list[Any]) -> list[tuple[int, str]]:
    """Stream entries ``id, [b, body, t, time]`` as ``(seq, body)``."""
    return [
        (int(_text(flat[i]).split("-")[0]), _text(flat[i + 1][1])) for i in range(0, len(flat), 2)
    ]


@dataclass
class _Shard:
    client: Redis
    # Each script registered once per client (by its source), on first use.
    scripts: dict[str, AsyncScript] = field(default_factory=dict)


@dataclass
class _LoopState:
    pid: int
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    shards: list[_Shard] = field(default_factory=list)
    prefix: str = "asgi"


def _layer_config() -> tuple[list[dict[str, Any]], str]:
    layer = settings.CHANNEL_LAYERS.get("default", {})
    backend = layer.get("BACKEND")
    if not (
        isinstance(backend, str) and issubclass(import_string(backend), RedisPubSubChannelLayer)
    ):
        raise ImproperlyConfigured(
            f"CHANNEL_LAYERS['default'] must use {PUBSUB_LAYER} (or a subclass, as "
            "ws.layer.PushChannelLayer): pushes are published in its wire format"
        )
    config = layer.get("CONFIG", {})
    if config.get("symmetric_encryption_keys"):
        raise ImproperlyConfigured(
            "CHANNEL_LAYERS symmetric_encryption_keys is not supported by the push "
            "publisher; protect the link with rediss:// (TLS) instead"
        )
    return decode_hosts(config.get("hosts")), config.get("prefix", "asgi")


class Publisher:
    """The process's background loop and Redis clients, made on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: _LoopState | None = None

    def _loop_state(self) -> _LoopState:
        state = self._state
        if state is not None and state.pid == os.getpid() and state.thread.is_alive():
            return state
        with self._lock:
            state = self._state
            if state is not None and state.pid == os.getpid() and state.thread.is_alive():
                return state
            # None yet, or inherited from the parent of a fork: the loop thread
            # does not exist in this process, so build our own.
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="push-publisher", daemon=True)
            thread.start()
            state = _LoopState(pid=os.getpid(), loop=loop, thread=thread)
            self._state = state
            atexit.register(self._shutdown, state)
            return state

    def run(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` on the background loop from sync code and wait for it."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError("push() called from async code: use 'await apush(...)'")
        state = self._loop_state()
        future: Future[T] = asyncio.run_coroutine_threadsafe(_as_coroutine(make), state.loop)
        return future.result()

    async def arun(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` on the background loop from async code."""
        state = self._loop_state()
        if asyncio.get_running_loop() is state.loop:
            return await make()
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(make), state.loop)
        return await asyncio.wrap_future(future)

    # -- runs on the background loop -------------------------------------------------------

    def _connected(self) -> _LoopState:
        """The loop's state with its Redis clients (made on first use, on the loop)."""
        state = self._state
        assert state is not None
        if not state.shards:
            hosts, state.prefix = _layer_config()
            for host in hosts:
                # Named by process, so CLIENT LIST shows who holds which connection
                # (push-<pid> is the sync pushes' client, ws/_publisher_sync.py).
                name = f"push-loop-{os.getpid()}"
                client = Redis(connection_pool=_pool({**host, "client_name": name}))
                state.shards.append(_Shard(client=client))
        return state

    def _route(self, group: str) -> tuple[_Shard, str]:
        """The shard the layer uses for ``group``, and the group's pub/sub channel there."""
        state = self._connected()
        channel = group_channel(state.prefix, group)
        return state.shards[_consistent_hash(channel, len(state.shards))], channel

    async def publish(
        self, topic: str, group: str, body: str, key: str = "", retention: Retention | None = None
    ) -> Position:
        """Number, store and publish one message body; return its position.

        ``retention`` (default: the settings') bounds the topic's history. With
        ``key``, a repeat within ``PUSH_HISTORY_TTL_S`` publishes nothing and
        returns the first push's position.
        """
        retention = retention or _default_retention()
        shard, channel = self._route(group)
        call = PublishCall.make(topic, channel, body, key, retention)
        seq, epoch = await _script_on(shard, _PUBLISH_LUA)(keys=call.keys, args=call.args)
        return Position(int(seq), _text(epoch))

    async def resume(
        self,
        topic: str,
        group: str,
        since: int | None,
        epoch: str | None,
        snapshot: bool,
        retention: Retention | None = None,
    ) -> Resume:
        """Where the topic stands and what a client at (``since``, ``epoch``) missed."""
        shard, _ = self._route(group)  # where publish() keeps the topic
        retention = retention or _default_retention()
        oldest_ms = int((time.time() - retention.ttl_s) * 1000)
        result = await _script_on(shard, _RESUME_LUA)(
            keys=[*_meta_keys(topic), GENERATION_KEY],
            args=[
                _new_epoch(),
                -1 if since is None else since,
                epoch or "",
                push_settings.PUSH_REPLAY_LIMIT,
                oldest_ms,
                "1" if snapshot else "0",
            ],
        )
        position = Position(int(result[0]), _text(result[1]))
        entries = _entries(result[4:])
        if result[2]:
            return Resume(position, True, entries, None, epoch if result[3] else None)
        return Resume(position, False, [], entries[0] if entries else None)

    async def last_pushed_at(self, topic: str, group: str) -> float | None:
        """When the newest message kept in ``topic``'s history was pushed (epoch seconds)."""
        shard, _ = self._route(group)
        newest = await shard.client.xrevrange(_meta_keys(topic)[1], count=1)
        if not newest:
            return None
        fields = {_text(key): _text(value) for key, value in newest[0][1].items()}
        return int(fields["t"]) / 1000

    async def run_script(self, lua: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script on the shard that holds ``keys[0]``."""
        state = self._connected()
        shard = state.shards[_consistent_hash(keys[0], len(state.shards))]
        return await _script_on(shard, lua)(keys=keys, args=args)

    async def run_group_script(self, group: str, lua: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script on the shard that carries ``group``'s pub/sub channel.

        The script gets that channel as ``ARGV[1]`` (then ``args``), to PUBLISH
        events to the group's members in the layer's wire format, as pushes do.
        """
        shard, channel = self._route(group)
        return await _script_on(shard, lua)(keys=keys, args=[channel, *args])

    async def run_on_every_shard(
        self, lua: str, keys: list[str], args: list[Any]
    ) -> tuple[Any, ...]:
        """Run a Lua script on every shard; the answers, in shard order."""
        state = self._connected()
        answers = [await _script_on(shard, lua)(keys=keys, args=args) for shard in state.shards]
        return tuple(_text(answer) if isinstance(answer, bytes) else answer for answer in answers)

    async def replace_hash(self, key: str, mapping: dict[str, Any], ttl_s: float) -> None:
        """Make ``key`` a hash of exactly ``mapping``, expiring after ``ttl_s``."""
        state = self._connected()
        client = state.shards[_consistent_hash(key, len(state.shards))].client
        async with client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.hset(key, mapping=mapping)
            pipe.pexpire(key, int(ttl_s * 1000))
            await pipe.execute()

    async def hashes_matching(self, pattern: str, field: str) -> list[Any]:
        """``field`` of every hash whose key matches ``pattern``, on every shard."""
        values: list[Any] = []
        for shard in self._connected().shards:
            keys = [key async for key in shard.client.scan_iter(match=pattern, count=500)]
            for key in keys:
                values.append(await shard.client.hget(key, field))
        return values

    async def group_listeners(self, group: str) -> int:
        """How many server processes subscribe to ``group``'s channel (its members' hosts)."""
        shard, channel = self._route(group)
        counts = await shard.client.pubsub_numsub(channel)
        return int(counts[0][1]) if counts else 0

    async def pushes_per_s(self, window_s: int = 10) -> float:
        """Pushes per second over the last ``window_s`` seconds (this one too), all processes."""
        now = int(time.time())
        keys = [f"{_RATE_KEY}:{second}" for second in range(now - window_s + 1, now + 1)]
        total = 0
        for shard in self._connected().shards:
            total += sum(int(v) for v in await shard.client.mget(keys) if v is not None)
        return total / window_s

    async def send_event(self, group: str, event: dict[str, Any]) -> None:
        """Send an unnumbered event (not a message) to a group's members, as the layer would."""
        shard, channel = self._route(group)
        await shard.client.publish(channel, msgpack.packb(event))

    def _shutdown(self, state: _LoopState) -> None:
        if state.pid != os.getpid() or not state.thread.is_alive():
            return

        async def close() -> None:
            for shard in state.shards:
                await shard.client.aclose(close_connection_pool=True)

        # Best effort at interpreter exit: Redis may already be gone.
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), state.loop).result(timeout=2)
        state.loop.call_soon_threadsafe(state.loop.stop)
        state.thread.join(timeout=2)


# Connections per Redis shard of one process's publisher. A burst of work (a thousand
# sockets subscribing at once) waits for a free one instead of failing: redis-py's
# default pool refuses past its limit with MaxConnectionsError.
POOL_SIZE = 50
POOL_WAIT_S = 20


def blocking_pool(pool_class: Any, host: dict[str, Any]) -> Any:
    """A ``pool_class`` (redis-py's sync or asyncio ``BlockingConnectionPool``) for the
    layer's address ``host`` entry, waiting when all its connections are busy."""
    options = {key: value for key, value in host.items() if key != "address"}
    if not issubclass(pool_class, ConnectionPool):  # redis-py's sync pool: its own Retry
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


_SENTINEL_ONLY = ("sentinels", "master_name", "sentinel_kwargs")


def _pool(host: dict[str, Any]) -> ConnectionPool:
    """A pool for the layer's ``host`` entry, blocking when all its connections are busy.

    Each new connection first checks for a failover (``ws.failover``).
    """
    host = {**host, "redis_connect_func": notice_on_connect}
    if "address" not in host:  # Sentinel: channels-redis' own pool
        return create_pool(host)
    return blocking_pool(BlockingConnectionPool, host)


def sync_pool(host: dict[str, Any], client_name: str) -> redis.ConnectionPool:
    """``_pool`` for redis-py's sync clients (the sync publisher)."""
    host = {**host, "client_name": client_name, "redis_connect_func": notice_on_connect_sync}
    if "address" in host:
        return blocking_pool(redis.BlockingConnectionPool, host)
    options = sync_client_options({k: v for k, v in host.items() if k not in _SENTINEL_ONLY})
    sentinels = redis.sentinel.Sentinel(host["sentinels"], sentinel_kwargs=host["sentinel_kwargs"])
    return redis.sentinel.SentinelConnectionPool(host["master_name"], sentinels, **options)


def _script_on(shard: _Shard, lua: str) -> AsyncScript:
    script = shard.scripts.get(lua)
    if script is None:
        script = shard.scripts[lua] = shard.client.register_script(lua)
    return script


async def _as_coroutine(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


publisher = Publisher()
