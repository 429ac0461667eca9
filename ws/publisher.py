"""The publisher: one background event loop per process, and the Redis clients it owns.

Why one loop per process: a redis-py asyncio pool belongs to the event loop
that made it, so ``async_to_sync`` per push would build and tear down a loop,
a thread and a TCP connection every time (see channels_redis' per-loop
layers). Here every push from async code, and every other Redis command of the
transport from sync or async code, runs on a single background loop that owns
one Redis client per shard (``ws/connections.py``); a forked child (a Celery
prefork worker) builds its own loop and clients on first use. Pushes from sync
code go straight from the caller's thread instead (``ws/publisher_sync.py``).

What is sent to number, store and publish a message is the store's
(``ws/store.py``); this module routes it to the shard the channel layer uses
for the topic's group. Other apps run their scripts here too, on the shard that
holds their key: ``run_script`` (sync code) and ``arun_script`` (async code).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgpack
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from ws import keys as redis_keys
from ws.connections import PerProcess, async_shards, shard_index
from ws.store import (
    PUBLISH_LUA,
    PUBLISH_MANY_LUA,
    RESUME_LUA,
    Batch,
    Outgoing,
    Position,
    PublishCall,
    Resume,
    ResumeCall,
    default_retention,
    group_channel,
    text,
)
from ws.topics import Retention

__all__ = ["Publisher", "arun_script", "publisher", "pushes_per_s", "run_script"]

T = TypeVar("T")


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


class Publisher:
    """The process's background loop and Redis clients, made on first use."""

    def __init__(self) -> None:
        self._process = PerProcess(self._start, alive=lambda state: state.thread.is_alive())

    def _start(self) -> _LoopState:
        # None yet, or inherited from the parent of a fork: the loop thread
        # does not exist in this process, so build our own.
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="push-publisher", daemon=True)
        thread.start()
        state = _LoopState(pid=os.getpid(), loop=loop, thread=thread)
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
        state = self._process.get()
        future: Future[T] = asyncio.run_coroutine_threadsafe(_as_coroutine(make), state.loop)
        return future.result()

    async def arun(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run ``make()`` on the background loop from async code."""
        state = self._process.get()
        if asyncio.get_running_loop() is state.loop:
            return await make()
        future = asyncio.run_coroutine_threadsafe(_as_coroutine(make), state.loop)
        return await asyncio.wrap_future(future)

    # -- runs on the background loop -------------------------------------------------------

    def _connected(self) -> _LoopState:
        """The loop's state with its Redis clients (made on first use, on the loop)."""
        state = self._process.latest()  # the loop this runs on: this process's
        assert state is not None
        if not state.shards:
            # Named by process, so CLIENT LIST shows who holds which connection
            # (push-<pid> is the sync pushes' client, ws/publisher_sync.py).
            shards = async_shards(f"push-loop-{os.getpid()}")
            state.prefix = shards.prefix
            state.shards = [_Shard(client=client) for client in shards.clients]
        return state

    def _route(self, group: str) -> tuple[_Shard, str]:
        """The shard the layer uses for ``group``, and the group's pub/sub channel there."""
        state = self._connected()
        channel = group_channel(state.prefix, group)
        return state.shards[shard_index(channel, len(state.shards))], channel

    def _shard_of(self, key: str) -> _Shard:
        state = self._connected()
        return state.shards[shard_index(key, len(state.shards))]

    async def publish(
        self, topic: str, group: str, body: str, key: str = "", retention: Retention | None = None
    ) -> Position:
        """Number, store and publish one message body; return its position.

        ``retention`` (default: the settings') bounds the topic's history. With
        ``key``, a repeat within ``PUSH_HISTORY_TTL_S`` publishes nothing and
        returns the first push's position.
        """
        retention = retention or default_retention()
        shard, channel = self._route(group)
        call = PublishCall.make(topic, channel, body, key, retention)
        seq, epoch = await _script_on(shard, PUBLISH_LUA)(keys=call.keys, args=call.args)
        return Position(int(seq), text(epoch))

    async def publish_many(self, pushes: Sequence[Outgoing]) -> list[Position]:
        """``publish`` for each of ``pushes``, one round trip per shard, in the given order
        (``SyncPublisher.publish_many``)."""
        state = self._connected()
        batch = Batch.of(
            pushes, state.prefix, lambda channel: shard_index(channel, len(state.shards))
        )
        for index, calls in batch.calls.items():
            script = _script_on(state.shards[index], PUBLISH_MANY_LUA)
            for call in calls:
                batch.answered(call, await script(keys=call.keys, args=call.args))
        return batch.positions()

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
        call = ResumeCall.make(topic, since, epoch, snapshot, retention or default_retention())
        return call.read(await _script_on(shard, RESUME_LUA)(keys=call.keys, args=call.args))

    async def last_pushed_at(self, topic: str, group: str) -> float | None:
        """When the newest message kept in ``topic``'s history was pushed (epoch seconds)."""
        shard, _ = self._route(group)
        newest = await shard.client.xrevrange(redis_keys.topic(topic).history, count=1)
        if not newest:
            return None
        fields = {text(key): text(value) for key, value in newest[0][1].items()}
        return int(fields["t"]) / 1000

    async def run_script(self, lua: str, keys: list[str], args: list[Any]) -> Any:
        """Run a Lua script on the shard that holds ``keys[0]``."""
        return await _script_on(self._shard_of(keys[0]), lua)(keys=keys, args=args)

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
        return tuple(text(answer) if isinstance(answer, bytes) else answer for answer in answers)

    async def replace_hash(self, key: str, mapping: dict[str, Any], ttl_s: float) -> None:
        """Make ``key`` a hash of exactly ``mapping``, expiring after ``ttl_s``."""
        client = self._shard_of(key).client
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
        keys = [redis_keys.pushes(second) for second in range(now - window_s + 1, now + 1)]
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


def _script_on(shard: _Shard, lua: str) -> AsyncScript:
    script = shard.scripts.get(lua)
    if script is None:
        script = shard.scripts[lua] = shard.client.register_script(lua)
    return script


async def _as_coroutine(make: Callable[[], Awaitable[T]]) -> T:
    return await make()


publisher = Publisher()


def run_script(lua: str, keys: list[str], args: list[Any]) -> Any:
    """Run a Lua script on the shard that holds ``keys[0]``, from sync code; its answer.

    One ``EVALSHA`` (the script is loaded once per Redis server), atomic as any script.
    Raises redis-py's ``ConnectionError`` while Redis is unreachable.
    """
    return publisher.run(lambda: publisher.run_script(lua, keys, args))


async def arun_script(lua: str, keys: list[str], args: list[Any]) -> Any:
    """``run_script`` for async code."""
    return await publisher.arun(lambda: publisher.run_script(lua, keys, args))


def pushes_per_s(window_s: int = 10) -> float:
    """Pushes per second over the last ``window_s`` seconds, every process counted."""
    return publisher.run(lambda: publisher.pushes_per_s(window_s))
