"""Redis flushed, or stopped and started again, under subscribed clients: nothing lost.

A stack of its own (a throwaway Redis, and daphne on it), so the session's
other processes never see the outage. The pushes come from this process,
each retried with backoff while Redis is away, as the publish task's are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from websockets.asyncio.client import ClientConnection

from project.redis_server import RedisServer, free_port
from tests.support.clients import open_socket, subscribe
from tests.support.processes import CeleryWorker, DaphneServer
from tests.support.pushing import KeyedPusher

pytestmark = pytest.mark.faults

CLIENTS = 20
PUSH_INTERVAL_S = 0.05
RETRY_BACKOFF_S = (0.05, 0.1, 0.2, 0.4)


@dataclass
class OwnStack:
    redis: RedisServer
    daphne: DaphneServer
    pusher: KeyedPusher

    def push(self, topic: str, n: Any) -> None:
        """Push ``n`` to ``topic`` (keyed), again with backoff while Redis is away."""
        self.pusher.push_until_done(topic, n)


@pytest.fixture(scope="module")
def own_stack(child_env, log_dir) -> Iterator[OwnStack]:
    directory = Path(tempfile.mkdtemp(prefix="push-outage-redis-"))
    redis = RedisServer.start(directory, tied_to_parent=True)
    env = {**child_env, "REDIS_URL": redis.url, "PUSH_LAYER_CHECK_S": "1"}
    daphne = DaphneServer(env, log_dir, free_port(), name="daphne-outage")
    stack = OwnStack(redis, daphne, KeyedPusher([redis.url]))
    yield stack
    daphne.stop()
    redis.stop()
    shutil.rmtree(directory, ignore_errors=True)


@dataclass
class Listener:
    """One subscribed client: every message it gets, with when it got it."""

    socket: ClientConnection
    received: list[tuple[int, float]] = field(default_factory=list)

    async def read_until(self, last: int) -> None:
        while not self.received or self.received[-1][0] != last:
            frame = json.loads(await self.socket.recv())
            if frame["op"] == "message":
                self.received.append((frame["data"], time.time()))

    async def read_until_count(self, count: int) -> None:
        while len(self.received) < count:
            frame = json.loads(await self.socket.recv())
            if frame["op"] == "message":
                self.received.append((frame["data"], time.time()))

    def got_at(self, n: int) -> float:
        return next(at for data, at in self.received if data == n)


async def listeners(stack: OwnStack, topic: str) -> list[Listener]:
    async def one() -> Listener:
        socket = await open_socket(stack.daphne.ws_url("/ws/"), stack.daphne.origin)
        await subscribe(socket, topic)
        return Listener(socket)

    return list(await asyncio.gather(*(one() for _ in range(CLIENTS))))


@dataclass
class Stream:
    """Pushes 0, 1, 2, ... to a topic from a thread, noting when each went through."""

    stack: OwnStack
    topic: str
    count: int
    pushed_at: list[float] = field(default_factory=list)
    reached: dict[int, threading.Event] = field(default_factory=dict)

    def run(self) -> None:
        for n in range(self.count):
            self.stack.push(self.topic, n)
            self.pushed_at.append(time.time())
            if n in self.reached:
                self.reached[n].set()
            time.sleep(PUSH_INTERVAL_S)  # the stream's pace, not a wait for anything

    def first_pushed_after(self, moment: float) -> int:
        return next(n for n, at in enumerate(self.pushed_at) if at >= moment)


async def run_with_incident(stack: OwnStack, topic: str, incident, count: int = 80):
    """Stream ``count`` pushes to subscribed clients; ``incident`` strikes at push 20.

    Returns the clients, the stream, and when the incident ended (Redis answering).
    """
    clients = await listeners(stack, topic)
    stream = Stream(stack, topic, count, reached={20: threading.Event()})
    pushing = asyncio.create_task(asyncio.to_thread(stream.run))
    reading = [asyncio.create_task(client.read_until(count - 1)) for client in clients]
    try:
        await asyncio.to_thread(stream.reached[20].wait, 30)
        ended = await incident()
        await asyncio.wait_for(pushing, 60)
        await asyncio.wait_for(asyncio.gather(*reading), 30)
    finally:
        for task in reading:
            task.cancel()
        with contextlib.suppress(BaseException):
            await pushing
    return clients, stream, ended


def assert_all_resumed_in_time(
    clients: list[Listener], stream: Stream, ended: float, incident: str
) -> None:
    """Every client got every push once, in order, and the first one pushed after the
    incident ended within 10 s of it; prints how long that took (p50, p99)."""
    for client in clients:
        got = [data for data, _ in client.received]
        assert got == list(range(stream.count)), f"lost {set(range(stream.count)) - set(got)}"
    first_after = stream.first_pushed_after(ended)
    latencies = sorted(client.got_at(first_after) - ended for client in clients)
    assert latencies[-1] < 10, latencies
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"\n{incident}: clients={len(latencies)} lost=0"
        f" resumed_p50={statistics.median(latencies):.2f}s resumed_p99={p99:.2f}s"
    )


async def test_flushall_under_twenty_subscribers_loses_nothing(own_stack):
    """After FLUSHALL every client receives pushes again within 10 s, missing none."""

    async def flush() -> float:
        with redis.Redis.from_url(own_stack.redis.url) as client:
            await asyncio.to_thread(client.flushall)
        return time.time()

    clients, stream, flushed = await run_with_incident(own_stack, "room.outage-flush", flush)
    assert_all_resumed_in_time(clients, stream, flushed, "flushall")


async def test_redis_stopped_for_five_seconds_loses_nothing(own_stack):
    """Redis stopped for 5 s and started again on its port: every client gets every push."""

    async def outage() -> float:
        own_stack.redis.stop()
        await asyncio.sleep(5)  # the outage itself
        own_stack.redis.launch()  # on this thread: PDEATHSIG follows the starting thread
        return time.time()

    clients, stream, returned = await run_with_incident(own_stack, "room.outage-restart", outage)
    assert_all_resumed_in_time(clients, stream, returned, "restart")


@pytest.fixture(scope="module")
def own_worker(own_stack, child_env, log_dir) -> Iterator[CeleryWorker]:
    """A Celery worker whose broker and layer are the outage stack's Redis."""
    env = {**child_env, "REDIS_URL": own_stack.redis.url}
    worker = CeleryWorker(env, log_dir, f"outage-{os.getpid()}@localhost", "celery-outage")
    yield worker
    worker.stop()


async def test_a_task_pushing_into_an_outage_retries_and_delivers_once(
    own_stack, own_worker, tmp_path
):
    """Redis stops under running tasks: their pushes fail, each task waits for Redis in
    its own process and runs again (ws.tasks.patient_with_redis), and once Redis is back each
    push arrives exactly once. (Celery's retry would republish to a Redis that may
    still be loading its data, and lose the task.)"""
    clients = await listeners(own_stack, "room.outage-worker")
    release = tmp_path / "release"
    started = [tmp_path / f"started-{n}" for n in range(2)]
    # Not the current app (the session worker tests use that); no result backend.
    with Celery(broker=own_stack.redis.url, set_as_current=False) as app:
        task_ids = [
            app.send_task(
                "tests.publish_when_released",
                args=["room.outage-worker", n, str(started[n]), str(release)],
            ).id
            for n in range(2)
        ]
    await asyncio.to_thread(
        own_worker.wait_until, lambda: all(p.exists() for p in started), 30, "tasks started"
    )

    own_stack.redis.stop()
    release.touch()  # the tasks push now, into the outage
    await asyncio.sleep(5)  # the outage itself
    own_stack.redis.launch()  # on this thread: PDEATHSIG follows the starting thread

    await asyncio.wait_for(asyncio.gather(*(c.read_until_count(2) for c in clients)), 60)
    await asyncio.to_thread(own_stack.push, "room.outage-worker", "marker")
    await asyncio.wait_for(asyncio.gather(*(c.read_until_count(3) for c in clients)), 30)
    for client in clients:
        got = [data for data, _ in client.received]
        assert sorted(got[:2]) == [0, 1]
        assert got[2] == "marker"  # no second push of either task
    log = own_worker.log_text()
    assert log.count("publish_when_released: Redis is away") >= len(task_ids)
    assert all(f"[{task_id}] succeeded" in log for task_id in task_ids)


@pytest.fixture
def unchecked_stack(child_env, log_dir) -> Iterator[OwnStack]:
    """A Redis and daphne of their own whose layer watch does not check for a minute:
    only its hearing of the layer's reconnects can repair an outage."""
    directory = Path(tempfile.mkdtemp(prefix="push-reconnect-redis-"))
    redis = RedisServer.start(directory, tied_to_parent=True)
    env = {**child_env, "REDIS_URL": redis.url, "PUSH_LAYER_CHECK_S": "60"}
    daphne = DaphneServer(env, log_dir, free_port(), name="daphne-reconnect")
    yield OwnStack(redis, daphne, KeyedPusher([redis.url]))
    daphne.stop()
    redis.stop()
    shutil.rmtree(directory, ignore_errors=True)


async def test_a_restart_right_after_the_first_socket_is_repaired_by_the_reconnect(
    unchecked_stack,
):
    """Redis restarts a moment after the process's first socket subscribed, long before
    the watch's first check. A push made as soon as Redis answers can reach Redis before
    the layer's subscription is back; the reconnect's catch-up still delivers it."""
    stack = unchecked_stack
    clients = await listeners(stack, "room.reconnect-early")
    stack.redis.stop()
    stack.redis.launch()  # on this thread: PDEATHSIG follows the starting thread
    await asyncio.to_thread(stack.push, "room.reconnect-early", 1)
    await asyncio.wait_for(asyncio.gather(*(c.read_until(1) for c in clients)), 10)
    assert all([data for data, _ in c.received] == [1] for c in clients)
    assert "the channel layer reconnected to Redis" in stack.daphne.log_text()
