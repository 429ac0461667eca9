"""A Sentinel failover under a live stack: the master is killed, the replica takes over.

Real processes: a master, its replica and three sentinels (``tests/support/redis_ha.py``),
two uvicorn processes and a Celery worker that find Redis through the sentinels
(``REDIS_SENTINELS``), sockets subscribed on both web processes, and this
process pushing 20 a second (keyed, as the publish task does, retried while the
master is away). The master gets ``SIGKILL``: what it had not yet sent to its
replica is gone, and the sentinels promote the replica.

After it, every socket has every message, each once and in order, or an honest
reset (a ``subscribed`` frame with ``recovered: false``) where messages it held
were lost with the old master: never a gap it is not told of, never a duplicate.
Sockets opened during the failover are served once it ends; tasks queued before
it run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from celery import Celery
from websockets.asyncio.client import ClientConnection

from project.redis_options import RedisPlace, async_client_options
from project.redis_server import free_port
from tests.support.clients import open_socket, subscribe, subscribe_when_served
from tests.support.processes import CeleryWorker, WebServer
from tests.support.pushing import KeyedPusher
from tests.support.redis_ha import MASTER_NAME, SentinelSet, sentinel_set
from tests.support.waiting import poll_until

pytestmark = pytest.mark.faults

SOCKETS_PER_SERVER = 20
PUSHES = 160
PUSHES_PER_S = 20
KILL_AT = 40
OPENED_DURING = 10
BACKOFF_S = (0.05, 0.1, 0.2, 0.4)


@dataclass
class FailoverStack:
    redis: SentinelSet
    servers: list[WebServer]
    worker: CeleryWorker
    place: RedisPlace
    pusher: KeyedPusher

    def push(self, topic: str, n: Any) -> None:
        """Push ``n`` (keyed), again with backoff while there is no master to take it."""
        self.pusher.push_until_done(topic, n)


@pytest.fixture(scope="module")
def failover_stack(child_env, log_dir) -> Iterator[FailoverStack]:
    with sentinel_set() as servers:
        env = {key: value for key, value in child_env.items() if key != "REDIS_URL"}
        env.update(
            REDIS_SENTINELS=servers.addresses,
            REDIS_SENTINEL_MASTER=MASTER_NAME,
            PUSH_LAYER_CHECK_S="1",
        )
        place = RedisPlace.from_values("", [], servers.addresses.split(","), [MASTER_NAME])
        pusher = KeyedPusher(place.layer_hosts(async_client_options(3, 0.5)))
        web = [
            WebServer(env, log_dir, free_port(), "uvicorn", name=f"uvicorn-sentinel-{n}")
            for n in range(2)
        ]
        worker = CeleryWorker(env, log_dir, f"sentinel-{os.getpid()}@localhost", "celery-sentinel")
        yield FailoverStack(servers, web, worker, place, pusher)
        worker.stop()
        for server in web:
            server.stop()


@dataclass
class Listener:
    """One socket's view: each message's data, and where the server said it reset."""

    socket: ClientConnection
    events: list[tuple[str, Any, float]] = field(default_factory=list)

    async def read_until(self, last: Any) -> None:
        while not self.events or self.events[-1][:2] != ("message", last):
            frame = json.loads(await self.socket.recv())
            if frame.get("op") == "message":
                self.events.append(("message", frame["data"], time.time()))
            elif frame.get("op") == "subscribed" and not frame["recovered"]:
                self.events.append(("reset", None, time.time()))
            elif frame.get("op") == "subscribed" and "continues" in frame:
                self.events.append(("continued", frame["epoch"], time.time()))

    async def read_until_count(self, count: int) -> None:
        while len(self.messages()) < count:
            frame = json.loads(await self.socket.recv())
            if frame.get("op") == "message":
                self.events.append(("message", frame["data"], time.time()))

    def messages(self) -> list[Any]:
        return [data for kind, data, _ in self.events if kind == "message"]

    def resets(self) -> int:
        return sum(1 for kind, _, _ in self.events if kind == "reset")

    def assert_every_message_or_an_honest_reset(self, count: int) -> None:
        last, told = -1, False
        for kind, data, _ in self.events:
            if kind == "reset":
                told = True
                continue
            if kind == "continued":
                continue
            assert data > last, f"{data} after {last}: a duplicate or out of order"
            assert data == last + 1 or told, f"{last + 1}..{data - 1} missing, no reset said so"
            last, told = data, False
        assert last == count - 1

    def got_at(self, data: Any) -> float | None:
        return next((at for kind, d, at in self.events if kind == "message" and d == data), None)


async def test_a_master_killed_under_pushes_fails_over_without_gaps_or_duplicates(
    failover_stack, tmp_path
):
    stack = failover_stack

    async def listen(server: WebServer, topic: str) -> Listener:
        socket = await open_socket(server.ws_url("/ws/"), server.origin)
        assert (await subscribe(socket, topic))["op"] == "subscribed"
        return Listener(socket)

    listeners = [
        await listen(server, "broadcast")
        for server in stack.servers
        for _ in range(SOCKETS_PER_SERVER)
    ]
    task_listener = await listen(stack.servers[0], "room.sentinel-tasks")

    # Two tasks running (waiting for a file) and one queued behind them in the broker.
    release = tmp_path / "release"
    started = [tmp_path / f"started-{n}" for n in range(3)]
    with Celery(broker=stack.place.celery_url(), set_as_current=False) as app:
        app.conf.broker_transport_options = stack.place.celery_transport_options()
        task_ids = [
            app.send_task(
                "tests.publish_when_released",
                args=["room.sentinel-tasks", n, str(started[n]), str(release)],
            ).id
            for n in range(3)
        ]
    await asyncio.to_thread(
        poll_until, lambda: started[0].exists() and started[1].exists(), 30, "two tasks running"
    )
    assert not started[2].exists()  # queued in the master, behind them

    pushed_at: dict[int, float] = {}
    killed = threading.Event()
    kill_time: list[float] = []

    def stream() -> None:
        for n in range(PUSHES):
            stack.push("broadcast", n)
            pushed_at[n] = time.time()
            if n == KILL_AT:
                kill_time.append(time.time())
                stack.redis.master.kill()  # SIGKILL: what it had not replicated is gone
                release.touch()  # the tasks push into the failover
                killed.set()
            time.sleep(1 / PUSHES_PER_S)  # the stream's pace

    pushing = asyncio.create_task(asyncio.to_thread(stream))
    reading = [asyncio.create_task(each.read_until(PUSHES - 1)) for each in listeners]
    try:
        await asyncio.to_thread(killed.wait, 60)
        opened = time.monotonic()
        during = await asyncio.wait_for(
            asyncio.gather(
                *(
                    subscribe_when_served(server.ws_url("/ws/"), server.origin, "broadcast")
                    for server in stack.servers
                    for _ in range(OPENED_DURING // 2)
                )
            ),
            60,
        )
        opened_served_s = time.monotonic() - opened
        await asyncio.wait_for(pushing, 120)
        await asyncio.wait_for(asyncio.gather(*reading), 60)
        await asyncio.wait_for(task_listener.read_until_count(3), 60)
    finally:
        for task in reading:
            task.cancel()
        with contextlib.suppress(BaseException):
            await pushing

    for each in listeners:
        each.assert_every_message_or_an_honest_reset(PUSHES)
    assert sorted(task_listener.messages()) == [0, 1, 2]  # each task's push, once
    log = stack.worker.log_text()
    assert all(f"[{task_id}] succeeded" in log for task_id in task_ids)
    assert len(during) == OPENED_DURING

    kill = kill_time[0]
    first_after = min(n for n, at in pushed_at.items() if at > kill)
    delivered = [at for each in listeners if (at := each.got_at(first_after)) is not None]
    new_master = stack.redis.master_port()
    assert new_master == stack.redis.replica.port
    # The promoted master began a new generation: each socket was told where it stands
    # in the topic's new epoch (its history going on, or reset), never left to guess.
    for each in listeners:
        assert any(kind in ("continued", "reset") for kind, _, _ in each.events)
    print(
        f"\nsentinel failover: sockets={len(listeners)} pushes={PUSHES}"
        f" resets={sum(each.resets() for each in listeners)}"
        f" continued={sum(1 for e in listeners for k, _, _ in e.events if k == 'continued')}"
        f" kill_to_first_push_delivered={min(delivered) - kill:.2f}s"
        f" opened_during_served_after={opened_served_s:.2f}s"
    )
    for server in stack.servers:
        assert server.failures_since(0) == []
