"""A rolling restart under 2,000 sockets and 20 pushes a second loses and repeats nothing.

On uvicorn (the default): a throwaway Redis, and uvicorn with two worker processes
on one port, as the Procfile runs it with ``WEB_CONCURRENCY=2``. 2,000 clients
subscribe, 200 to each of ten topics, and the test pushes 20 keyed messages a
second, to each topic in turn. Then the processes are restarted one after the
other with uvicorn's own rolling restart: SIGHUP makes its supervisor start a new
worker, wait until it serves, SIGTERM the old one and wait for it to exit, then do
the same with the next. Each old worker drains (``ws/drain.py``): it stops
accepting, closes its sockets ``1012`` spread over ``PUSH_DRAIN_S``, and exits once
they are gone.

Why workers on one port rather than two servers on two ports: that is how the
project deploys uvicorn, and it asks nothing of clients. A reconnecting client
comes back to the port it knew and the kernel hands it to a worker that still
accepts (the draining one has closed its copy of the listening socket). Each
client does what push.js does on a close ``1012``: it reconnects after a random
delay within ``minDelayMs`` and resubscribes with ``since`` and ``epoch``; and one
real push.js page in Chromium (when installed) rides the same restart. Every
socket must have received every message of its topic exactly once, in order,
frame for frame (push.js would drop a duplicate; the server must send none), and
the drain must have spread the reconnects over its window.

Why ten topics and not one: 2,000 sockets on one topic at 20 pushes a second are
40,000 frames a second, which two cores shared by both servers, Redis and the
clients deliver only seconds late (measured here: about 50 µs of CPU per frame,
clients included). What is tested is the drain, not fan-out capacity; each topic
still gets a push every half second, so most resumes replay something.

On daphne (one process per port, behind a balancer in production): two daphnes on
two ports, fewer sockets, and clients that try the other port after a close, as
a balancer would send them elsewhere. Each is stopped with SIGTERM, waited for and
started again, then the other. daphne can only send close codes 1000 and
3000-4999, so it drains with ``4000``, which push.js treats like ``1012``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import re
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from project.redis_server import RedisServer, free_port
from project.servers import web_argv
from tests.support.browser import CHROMIUM_ARGS, chromium_path
from tests.support.processes import ChildProcess, DaphneServer, WebServer, http_ok
from tests.support.pushing import KeyedPusher
from tests.support.waiting import poll_until

# Two thousand sockets reconnecting: a CPU-bound measure of the spread, so it runs alone.
pytestmark = [pytest.mark.faults, pytest.mark.serial]

TOPICS = [f"room.rolling-{index}" for index in range(10)]
PUSHES_PER_S = 20
# Long enough that the workers taking the reconnects (one of them new) keep up on two
# shared cores: at 4 s the second drain's sockets waited seconds to be served.
UVICORN_DRAIN_S = 8.0
DAPHNE_DRAIN_S = 2.0
# push.js: minDelayMs, and its delay after a close of a healthy connection by code; after
# any other close it backs off from minDelayMs, and it stops on repeated refusals.
MIN_DELAY_S = 0.5
GO_ELSEWHERE = {1012: MIN_DELAY_S, 4000: MIN_DELAY_S / 4}
REFUSALS = {1008, 4001, 4003, 4429}
CONNECTS_IN_FLIGHT = 100
# A new worker imports Django before it serves: on a loaded machine that can take longer
# than the supervisor's default 5 s, after which uvicorn would abort the restart.
WORKER_READY_S = 30
STARTED = re.compile(r"Started server process \[(\d+)\]")
FINISHED = re.compile(r"Finished server process \[(\d+)\]")
DRAINING = re.compile(r"\[(\d+)\] ws draining: closing (\d+) sockets")
DRAINED = re.compile(r"\[(\d+)\] ws drained in ([\d.]+) s \(([^)]*)\), (\d+) sockets left")


@contextlib.contextmanager
def own_redis() -> Iterator[RedisServer]:
    directory = Path(tempfile.mkdtemp(prefix="push-rolling-redis-"))
    server = RedisServer.start(directory, tied_to_parent=True)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def uvicorn_workers(server: WebServer, since: int = 0) -> list[int]:
    """The worker PIDs started (after log offset ``since``) and not finished."""
    log = server.log_since(since)
    finished = set(FINISHED.findall(log))
    return [int(pid) for pid in STARTED.findall(log) if pid not in finished]


@pytest.fixture(scope="module")
def uvicorn_stack(child_env, log_dir) -> Iterator[tuple[KeyedPusher, WebServer]]:
    with own_redis() as redis_server:
        env = {**child_env, "REDIS_URL": redis_server.url, "PUSH_DRAIN_S": str(UVICORN_DRAIN_S)}
        server = WebServer(
            env,
            log_dir,
            free_port(),
            "uvicorn",
            workers=2,
            name="uvicorn-rolling",
            extra_args=["--timeout-worker-healthcheck", str(WORKER_READY_S)],
        )
        try:
            poll_until(lambda: len(uvicorn_workers(server)) == 2, 30, "two uvicorn workers")
            yield KeyedPusher([redis_server.url]), server
        finally:
            server.stop()


@dataclass
class DaphnePair:
    pusher: KeyedPusher
    env: dict[str, str]
    servers: list[ChildProcess]
    ports: list[int]

    def url(self, index: int, path: str) -> str:
        return f"http://127.0.0.1:{self.ports[index]}{path}"


@pytest.fixture(scope="module")
def daphne_pair(child_env, log_dir) -> Iterator[DaphnePair]:
    with own_redis() as redis_server:
        env = {**child_env, "REDIS_URL": redis_server.url, "PUSH_DRAIN_S": str(DAPHNE_DRAIN_S)}
        servers: list[ChildProcess] = []
        try:
            for index in range(2):
                servers.append(
                    DaphneServer(env, log_dir, free_port(), name=f"daphne-rolling-{index}")
                )
            ports = [server.port for server in servers]  # type: ignore[attr-defined]
            yield DaphnePair(KeyedPusher([redis_server.url]), env, servers, ports)
        finally:
            for server in servers:
                server.stop()


@dataclass
class Subscriber:
    """One socket's client, reconnecting and resuming as push.js does.

    After a close ``1012`` or ``4000`` it reconnects to the next of ``urls`` (one
    URL: the same port) after push.js's delay; after a link dropped without
    either (``dropped``) or a connect that fails, with push.js's backoff. A
    refusal is wrong here. ``received`` is every message's data as it came off
    the wire, across reconnects; ``reconnects_at`` when each reconnect began (its
    new connection went out); ``away_s`` each time from a close to the resume's
    answer; ``replayed`` how many messages came in a resume's replay.
    """

    urls: list[str]
    topic: str
    at: int = 0  # the index of the URL in use
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    caught_up: asyncio.Event = field(default_factory=asyncio.Event)
    received: list[int] = field(default_factory=list)
    reconnects_at: list[float] = field(default_factory=list)
    away_s: list[float] = field(default_factory=list)
    replayed: int = 0
    dropped: list[int | None] = field(default_factory=list)
    connect_failures: list[str] = field(default_factory=list)
    wrong: list[Any] = field(default_factory=list)
    seq: int | None = None
    epoch: str | None = None
    resumed_at: int = 0  # the seq in the last "subscribed": a replay goes up to it
    closed_at: float | None = None
    last: int | None = None  # the last message pushed to the topic, once pushing is over

    def expect_last(self, last: int) -> None:
        self.last = last
        if self.received and self.received[-1] >= last:
            self.caught_up.set()

    async def follow(self, gate: asyncio.Semaphore) -> None:
        """Read the topic until cancelled, reconnecting and resuming after a close."""
        while True:
            if self.closed_at is not None:
                self.reconnects_at.append(time.monotonic())
            try:
                # The first connects are a storm of the test's making: a few at a time.
                async with gate if self.seq is None else contextlib.nullcontext():
                    url = self.urls[self.at % len(self.urls)]
                    socket = await connect(
                        url,
                        origin=own_origin(url),  # type: ignore[arg-type]
                        open_timeout=60,
                        ping_interval=None,
                    )
            except (OSError, InvalidHandshake) as error:
                self.connect_failures.append(repr(error))
                self.at += 1
                tries = min(len(self.connect_failures), 5)
                await asyncio.sleep(MIN_DELAY_S * 2**tries * (0.5 + random.random() / 2))
                continue
            try:
                await self.read(socket)
            except ConnectionClosed:
                pass
            except asyncio.CancelledError:
                socket.transport.abort()
                raise
            self.closed_at = time.monotonic()
            received = socket.protocol.close_rcvd
            code = received.code if received is not None else None
            if code in REFUSALS:
                self.wrong.append(f"closed {code}")
                return
            self.at += 1
            if code in GO_ELSEWHERE:
                await asyncio.sleep(random.random() * GO_ELSEWHERE[code])  # push.js's delay
            else:
                self.dropped.append(code)
                await asyncio.sleep(MIN_DELAY_S * (0.5 + random.random() / 2))

    async def read(self, socket: ClientConnection) -> None:
        request: dict[str, Any] = {"op": "subscribe", "topic": self.topic}
        if self.seq is not None:
            request.update(since=self.seq, epoch=self.epoch)
        await socket.send(json.dumps(request))
        async for text in socket:
            frame = json.loads(text)
            if frame["op"] == "message":
                self.received.append(frame["data"])
                self.seq = frame["seq"]
                self.replayed += frame["seq"] <= self.resumed_at
                if self.last is not None and frame["data"] >= self.last:
                    self.caught_up.set()
            elif frame["op"] == "subscribed":
                if self.seq is None:
                    self.seq, self.epoch = frame["seq"], frame["epoch"]
                elif (frame["epoch"], frame["recovered"]) != (self.epoch, True):
                    self.wrong.append(frame)  # a resume that could not replay
                if self.closed_at is not None:
                    self.away_s.append(time.monotonic() - self.closed_at)
                self.resumed_at = frame["seq"]
                self.subscribed.set()
            else:
                self.wrong.append(frame)


def own_origin(url: str) -> str:
    """The origin of the page a socket to ``url`` belongs to: its own server's."""
    return "http" + url.removeprefix("ws").removesuffix("/ws/")


def pushed_to(topic: str, pushed: int) -> list[int]:
    """What was pushed to ``topic``, in order: every ``len(TOPICS)``-th of ``range(pushed)``."""
    return list(range(TOPICS.index(topic), pushed, len(TOPICS)))


async def all_set(events: list[asyncio.Event], timeout: float) -> None:
    """Wait until every event is set; give up after ``timeout`` (the caller checks which)."""
    waiting = [asyncio.ensure_future(event.wait()) for event in events]
    _, pending = await asyncio.wait(waiting, timeout=timeout)
    for task in pending:
        task.cancel()


@contextlib.asynccontextmanager
async def following(subscribers: list[Subscriber]) -> AsyncIterator[None]:
    """Every subscriber connected and subscribed; all stopped afterwards."""
    gate = asyncio.Semaphore(CONNECTS_IN_FLIGHT)
    tasks = [asyncio.create_task(each.follow(gate)) for each in subscribers]
    try:
        await all_set([each.subscribed for each in subscribers], 60)
        assert sum(not each.subscribed.is_set() for each in subscribers) == 0
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def push_through(
    pusher: KeyedPusher,
    subscribers: list[Subscriber],
    restart: Callable[[], Coroutine[Any, Any, Any]],
) -> tuple[int, float]:
    """Push 20 a second, run ``restart``, push a second more; wait for every socket.

    Returns how many messages were pushed and how long the restart took.
    """
    restarted = threading.Event()

    def stream() -> int:
        count, next_at, tail = 0, time.monotonic(), PUSHES_PER_S
        while tail > 0:
            pusher.push(TOPICS[count % len(TOPICS)], count)
            count += 1
            tail -= restarted.is_set()
            next_at += 1 / PUSHES_PER_S
            time.sleep(max(0.0, next_at - time.monotonic()))  # the stream's pace
        return count

    pushing = asyncio.create_task(asyncio.to_thread(stream))
    try:
        await asyncio.sleep(1)  # a second of pushes before the restart: the scenario
        began = time.monotonic()
        await restart()
        restart_s = time.monotonic() - began
    finally:
        restarted.set()
        pushed = await asyncio.wait_for(pushing, 30)
    for each in subscribers:
        each.expect_last(pushed_to(each.topic, pushed)[-1])
    await all_set([each.caught_up for each in subscribers], 30)
    return pushed, restart_s


def busiest_second(times: list[float]) -> int:
    """The most events within any one second."""
    times = sorted(times)
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


@dataclass
class Drains:
    """What the old processes' logs say of their drains, by PID."""

    sockets: dict[int, int]
    seconds: dict[int, float]
    ends: dict[int, tuple[str, int]]  # why it ended, sockets left

    @classmethod
    def read(cls, log: str) -> Drains:
        drained = DRAINED.findall(log)
        return cls(
            {int(pid): int(count) for pid, count in DRAINING.findall(log)},
            {int(pid): float(seconds) for pid, seconds, _, _ in drained},
            {int(pid): (why, int(left)) for pid, _, why, left in drained},
        )


def check_and_report(
    name: str,
    subscribers: list[Subscriber],
    drains: Drains,
    pushed: int,
    drain_s: float,
    **more: Any,
) -> int:
    """Print the figures; assert nothing was lost, repeated or stormed.

    Returns how many reconnects the subscribers made.
    """
    reconnects = [at for each in subscribers for at in each.reconnects_at]
    busiest = busiest_second(reconnects)
    away = sorted(seconds for each in subscribers for seconds in each.away_s) or [0.0]
    extra = "".join(f" {key}={value}" for key, value in more.items())
    print(
        f"\n{name}: sockets={len(subscribers)} pushes={pushed} ({PUSHES_PER_S}/s over"
        f" {len(TOPICS)} topics) drained={list(drains.sockets.values())} sockets in"
        f" {list(drains.seconds.values())} s (PUSH_DRAIN_S={drain_s:g})"
        f" reconnects={len(reconnects)} busiest_second={busiest}"
        f" dropped={sum(len(each.dropped) for each in subscribers)}"
        f" replayed={sum(each.replayed for each in subscribers)}"
        f" away_p50={away[len(away) // 2]:.2f}s away_max={away[-1]:.2f}s{extra}"
    )
    assert [(each.topic, each.wrong) for each in subscribers if each.wrong] == []
    assert [each.connect_failures for each in subscribers if each.connect_failures] == []
    behind = [each for each in subscribers if not each.caught_up.is_set()]
    assert behind == [], f"{len(behind)} sockets did not get the last push"
    # Every message once, in order, frame for frame, on every socket.
    assert [each for each in subscribers if each.received != pushed_to(each.topic, pushed)] == []
    # Each old process drained every socket it held, and exited once they were gone.
    assert sum(drains.sockets.values()) >= len(subscribers)
    assert set(drains.ends.values()) == {("every socket is gone", 0)}
    assert max(drains.seconds.values()) <= drain_s + 1
    # No drain sent its sockets at once: the busiest second holds about one
    # PUSH_DRAIN_S-th of the larger drain.
    assert busiest <= 2 * max(drains.sockets.values()) / drain_s
    return len(reconnects)


# A PushClient on a page of the server's origin, recording what it delivers and when
# its sockets open and close (performance.now(), ms).
PAGE_HARNESS = """
(topic) => {
  window.delivered = [];
  window.resets = [];
  window.socketEvents = [];  // ["open" | close code, ms]
  const Native = WebSocket;
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      socketEvents.push(["open", performance.now()]);
      this.addEventListener("close", (e) => socketEvents.push([e.code, performance.now()]));
    }
  };
  window.client = new PushClient();
  client.subscribe(topic, (data) => delivered.push(data), {
    onReset: (frame) => resets.push(frame),
  });
}
"""


@contextlib.asynccontextmanager
async def push_js_page(server: WebServer, topic: str) -> AsyncIterator[Any]:
    """A page running push.js, subscribed to ``topic``; None without Chromium."""
    path = chromium_path()
    if path is None:
        yield None
        return
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=path, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = await chromium.new_page()
            page_errors: list[str] = []
            page.on("pageerror", lambda error: page_errors.append(str(error)))
            await page.goto(server.http_url("/healthz"))
            await page.add_script_tag(url=server.http_url("/static/ws/push.js"))
            await page.evaluate(PAGE_HARNESS, topic)
            await page.wait_for_function(
                "(topic) => client._topics.get(topic).seq !== null", arg=topic, timeout=30_000
            )
            yield page
            assert page_errors == []
        finally:
            await chromium.close()


async def check_page(page: Any, pushed: int) -> int:
    """The page got every message once, in order, and came back promptly after each close."""
    await page.wait_for_function(
        "(last) => delivered.length && delivered[delivered.length - 1] >= last",
        arg=pushed_to(TOPICS[0], pushed)[-1],
        timeout=30_000,
    )
    delivered, resets, events = await page.evaluate("[delivered, resets, socketEvents]")
    assert delivered == pushed_to(TOPICS[0], pushed)
    assert resets == []
    closes = events[1::2]
    assert closes, events
    assert {code for code, _ in closes} <= set(GO_ELSEWHERE), events
    for (_, closed_at), (kind, opened_at) in zip(closes, events[2::2], strict=False):
        assert kind == "open"
        assert opened_at - closed_at <= MIN_DELAY_S * 1000 + 250, events
    return len(closes)


@pytest.mark.slow
async def test_a_rolling_restart_of_uvicorn_workers_under_2000_sockets(uvicorn_stack):
    pusher, server = uvicorn_stack
    old_workers = uvicorn_workers(server)
    url = server.ws_url("/ws/")
    subscribers = [Subscriber([url], TOPICS[i % len(TOPICS)]) for i in range(2000)]

    async def restart() -> None:
        """uvicorn's rolling restart; over once both old workers exited and two serve."""
        server.process.send_signal(signal.SIGHUP)

        def rolled() -> bool:
            log = server.log_since(log_offset)
            finished = {int(pid) for pid in FINISHED.findall(log)}
            return finished >= set(old_workers) and len(uvicorn_workers(server, log_offset)) == 2

        await asyncio.to_thread(poll_until, rolled, 90, "both workers replaced")

    async with following(subscribers), push_js_page(server, TOPICS[0]) as page:
        log_offset = server.log_size()
        pushed, restart_s = await push_through(pusher, subscribers, restart)
        page_closes = await check_page(page, pushed) if page is not None else None

    drains = Drains.read(server.log_since(log_offset))
    assert set(drains.sockets) == set(old_workers)
    reconnects = check_and_report(
        "uvicorn rolling restart",
        subscribers,
        drains,
        pushed,
        UVICORN_DRAIN_S,
        restart=f"{restart_s:.1f}s",
        page="no chromium" if page_closes is None else f"{page_closes} closes",
    )
    # Every socket the old workers closed came back (the page's too), and each close
    # reached its client: uvicorn waits 10 s for a slow one to answer.
    assert reconnects + (page_closes or 0) >= sum(drains.sockets.values())
    assert [each.dropped for each in subscribers if each.dropped] == []
    assert server.failures_since(log_offset) == []


@pytest.mark.slow
async def test_a_rolling_restart_of_two_daphnes_under_400_sockets(daphne_pair, log_dir):
    pair = daphne_pair
    urls = [pair.url(index, "/ws/").replace("http", "ws", 1) for index in range(2)]
    subscribers = [Subscriber(urls, TOPICS[i % len(TOPICS)], at=i % 2) for i in range(400)]
    old = list(pair.servers)
    stop_s: list[float] = []

    async def restart() -> None:
        """SIGTERM one, wait for it to exit, start it again on its port; then the other."""
        for index in range(2):
            began = time.monotonic()
            await asyncio.to_thread(pair.servers[index].stop)
            stop_s.append(time.monotonic() - began)
            # Started from this thread: a child dies with the thread that started it.
            argv = web_argv("daphne", host="127.0.0.1", port=pair.ports[index])
            new = ChildProcess(f"daphne-rolling-{index}-again", argv, pair.env, log_dir)
            pair.servers[index] = new
            serving = functools.partial(http_ok, pair.url(index, "/healthz"))
            await asyncio.to_thread(new.wait_until, serving, 30, "an answer on /healthz")

    async with following(subscribers):
        pushed, restart_s = await push_through(pair.pusher, subscribers, restart)

    drains = Drains.read("".join(server.log_text() for server in old))
    assert set(drains.sockets) == {server.pid for server in old}
    reconnects = check_and_report(
        "daphne rolling restart",
        subscribers,
        drains,
        pushed,
        DAPHNE_DRAIN_S,
        restart=f"{restart_s:.1f}s",
        stopped_in=[f"{seconds:.1f}s" for seconds in stop_s],
    )
    assert reconnects >= sum(drains.sockets.values())
    assert [server.process.returncode for server in old] == [0, 0]
    # Links may have dropped: autobahn aborts one whose client does not answer its close
    # within 1 s, so a busy client may never read the 4000. It reconnects with backoff,
    # as push.js does, and resumes all the same (checked above).
