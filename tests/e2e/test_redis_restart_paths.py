"""Redis restarted under a live stack: every Redis path a socket uses is served after it.

A stack of its own: a throwaway Redis with its append-only file, uvicorn with
two worker processes on it (as ``make run`` with ``WEB_CONCURRENCY=2``), the
session's test database. While pushes go out to subscribed sockets, Redis is
shut down, started again on the same files, and half a second later new
sockets arrive on both endpoints, each taking one path through Redis: a
subscribe, a resume, a signed-in socket's per-user count, presence, a chat
message (its rate limit), the seed route's join. Each client behaves as
``push.js`` does: an answer ``4503`` (Redis away, nothing done) is tried again
with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from project.redis_server import RedisServer, free_port
from tests.chat.rooms import make_room
from tests.support.browser import browser, in_plain_thread  # noqa: F401 - browser: a fixture
from tests.support.clients import (
    RETRY_BACKOFF_S,
    TRY_AGAIN,
    open_socket,
    recv_until,
    subscribe_until_served,
)
from tests.support.dashboard_pages import WAIT_MS, open_dashboard, sales_payload, wait_for_data
from tests.support.processes import WebServer
from tests.support.pushing import KeyedPusher
from tests.support.users import in_thread, session_cookie
from tests.support.waiting import poll_until
from ws import keys

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.faults]

SERVER_PROCESSES = 2
SUBSCRIBERS = 200
PUSHES_PER_S = 20
OUTAGE_S = 3
# The check this reproduces: new sockets arrive half a second after Redis is back.
ARRIVE_AFTER_S = 0.5
ANSWERED_WITHIN_S = 5


@dataclass
class RestartStack:
    redis: RedisServer
    server: WebServer
    pusher: KeyedPusher

    def push(self, topic: str, n: Any, msg: str = "success") -> None:
        """Push ``n`` (keyed, as the publish task does), again while Redis is away."""
        self.pusher.push_until_done(topic, n, msg)

    def census_sockets(self) -> int:
        """Open sockets, as the server processes' census in Redis says."""
        with redis.Redis.from_url(self.redis.url) as client:
            found = client.keys(keys.census("*"))
            return sum(int(client.hget(key, "_sockets") or 0) for key in found)


@contextlib.contextmanager
def own_stack(child_env, log_dir, server: str, workers: int) -> Iterator[RestartStack]:
    """A throwaway Redis and ``server`` (uvicorn or daphne) on it."""
    directory = Path(tempfile.mkdtemp(prefix=f"push-restart-{server}-"))
    redis_server = RedisServer.start(directory, tied_to_parent=True)
    env = {
        **child_env,
        "REDIS_URL": redis_server.url,
        "PUSH_LAYER_CHECK_S": "1",
        "PUSH_MAX_CONNECTIONS_PER_USER": "50",
        "CHAT_RATE_MESSAGES": "100",
    }
    web = WebServer(env, log_dir, free_port(), server, workers=workers, name=f"{server}-restart")
    try:
        yield RestartStack(redis_server, web, KeyedPusher([redis_server.url]))
    finally:
        web.stop()
        redis_server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def restart_stack(child_env, log_dir) -> Iterator[RestartStack]:
    """uvicorn with two processes, as ``make run`` with ``WEB_CONCURRENCY=2``."""
    with own_stack(child_env, log_dir, "uvicorn", SERVER_PROCESSES) as stack:
        yield stack


@pytest.fixture(scope="module")
def daphne_restart_stack(child_env, log_dir) -> Iterator[RestartStack]:
    """daphne, the seed's server (it sends close codes 1000 and 3000-4999 only)."""
    with own_stack(child_env, log_dir, "daphne", 1) as stack:
        yield stack


@dataclass
class Arrival:
    """One client arriving after the restart: what it asked, and what it took."""

    path: str
    answered_after_s: float = -1.0
    tries: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


Ask = Callable[[ClientConnection, Arrival], Awaitable[bool]]


async def until_answered(
    arrival: Arrival, connect: Callable[[], Awaitable[ClientConnection]], ask: Ask
) -> None:
    """Connect and ask as push.js would: a ``4503`` (frame or close) is tried again later.

    ``ask`` sends its request and returns True when answered, False on a ``4503``
    frame (the socket stays); any other error frame fails the test.
    """
    started = time.monotonic()
    while True:
        arrival.tries += 1
        socket = await connect()
        try:
            while not await ask(socket, arrival):
                await asyncio.sleep(RETRY_BACKOFF_S[min(arrival.tries, len(RETRY_BACKOFF_S) - 1)])
                arrival.tries += 1
            arrival.answered_after_s = time.monotonic() - started
            return
        except ConnectionClosed as closed:
            arrival.errors.append({"closed": closed.rcvd.code if closed.rcvd else None})
        assert arrival.errors[-1] == {"closed": TRY_AGAIN}, arrival
        await asyncio.sleep(RETRY_BACKOFF_S[min(arrival.tries, len(RETRY_BACKOFF_S) - 1)])


def answer_of(topic: str, ops: tuple[str, ...]) -> Callable[[dict[str, Any]], bool]:
    return lambda frame: frame.get("topic") == topic and frame.get("op") in (*ops, "error")


async def subscribe_asking(
    socket: ClientConnection, arrival: Arrival, frame: dict[str, Any], then: str | None = None
) -> bool:
    """Subscribe with ``frame``; True once ``subscribed`` (and ``then``, if named) came."""
    await socket.send(json.dumps({"op": "subscribe", **frame}))
    answer = await recv_until(socket, answer_of(frame["topic"], ("subscribed",)))
    if answer["op"] == "error":
        assert (answer["code"], answer.get("request")) == (TRY_AGAIN, "subscribe"), answer
        arrival.errors.append(answer)
        return False
    if then is not None:
        await recv_until(socket, lambda f: f.get("op") == then and f.get("topic") == frame["topic"])
    return True


@dataclass
class Listener:
    socket: ClientConnection
    received: list[int] = field(default_factory=list)

    async def read_until(self, last: int) -> None:
        while not self.received or self.received[-1] != last:
            frame = json.loads(await self.socket.recv())
            if frame.get("op") == "message":
                self.received.append(frame["data"])


async def test_sockets_arriving_just_after_a_restart_are_all_served_on_every_path(
    restart_stack, alice
):
    stack = restart_stack
    await in_thread(make_room, "restart-room", alice)
    await in_thread(partial(make_room, "restart-seed", alice, allow_client_messages=True))
    cookie = {"Cookie": await in_thread(session_cookie, alice)}
    ws_url, origin = stack.server.ws_url("/ws/"), stack.server.origin

    async def listener() -> Listener:
        socket = await open_socket(ws_url, origin)
        await socket.send(json.dumps({"op": "subscribe", "topic": "broadcast"}))
        await recv_until(socket, answer_of("broadcast", ("subscribed",)))
        return Listener(socket)

    listeners = list(await asyncio.gather(*(listener() for _ in range(SUBSCRIBERS))))
    count = 8 * PUSHES_PER_S
    pushed_20 = threading.Event()

    def stream() -> None:
        for n in range(count):
            stack.push("broadcast", n)
            if n == 20:
                pushed_20.set()
            time.sleep(1 / PUSHES_PER_S)  # the stream's pace

    pushing = asyncio.create_task(asyncio.to_thread(stream))
    reading = [asyncio.create_task(each.read_until(count - 1)) for each in listeners]
    # A position in broadcast's history from before the restart, for the resume path.
    await asyncio.to_thread(pushed_20.wait, 30)
    held = await open_socket(ws_url, origin)
    await held.send(json.dumps({"op": "subscribe", "topic": "broadcast"}))
    before = await recv_until(held, answer_of("broadcast", ("subscribed",)))
    log_offset = stack.server.log_size()

    stack.redis.stop()
    await asyncio.sleep(OUTAGE_S)  # the outage itself
    stack.redis.launch()  # on this thread: PDEATHSIG follows the starting thread
    await asyncio.sleep(ARRIVE_AFTER_S)  # when the clients of the check arrive

    def anonymous() -> Awaitable[ClientConnection]:
        return open_socket(ws_url, origin)

    def signed_in() -> Awaitable[ClientConnection]:
        return open_socket(ws_url, origin, additional_headers=cookie)

    def seed_room() -> Awaitable[ClientConnection]:
        return open_socket(stack.server.ws_url("/ws/heartbeat/restart-seed/"), origin)

    async def seed_greeted(socket: ClientConnection, arrival: Arrival) -> bool:
        greeting = json.loads(await socket.recv())
        if greeting.get("code") == TRY_AGAIN:  # the close 4503 follows
            await socket.recv()
        assert greeting["msg"] == "heartbeat", greeting
        return True

    async def seed_says_hi(socket: ClientConnection, arrival: Arrival) -> bool:
        await seed_greeted(socket, arrival)
        await socket.send(json.dumps({"message": "hi"}))
        # Relayed to the room, the sender too; or the seed route's error envelope.
        answer = await recv_until(
            socket, lambda frame: frame == {"message": "hi"} or frame.get("code") == TRY_AGAIN
        )
        return answer == {"message": "hi"}

    async def chat_message(socket: ClientConnection, arrival: Arrival) -> bool:
        topic = "chat.restart-room"
        await socket.send(json.dumps({"op": "publish", "topic": topic, "data": {"text": "back"}}))
        answer = await recv_until(socket, answer_of(topic, ("published",)))
        if answer["op"] == "error":
            assert answer["code"] == TRY_AGAIN, answer
            arrival.errors.append(answer)
            return False
        return True

    def subscribing(frame: dict[str, Any], then: str | None = None) -> Ask:
        return lambda socket, arrival: subscribe_asking(socket, arrival, frame, then)

    resume_from = {"topic": "broadcast", "since": before["seq"], "epoch": before["epoch"]}
    paths: dict[str, tuple[Callable[[], Awaitable[ClientConnection]], Ask]] = {
        "subscribe": (anonymous, subscribing({"topic": "broadcast"})),
        "resume": (anonymous, subscribing(resume_from)),
        "signed-in subscribe": (signed_in, subscribing({"topic": f"user.{alice.pk}"})),
        "presence": (signed_in, subscribing({"topic": "chat.restart-room"}, "presence")),
        "chat message": (signed_in, chat_message),
        "seed route join": (seed_room, seed_greeted),
        "seed route message": (seed_room, seed_says_hi),
    }
    arrivals = [Arrival(name) for name in paths for _ in range(7)]
    try:
        await asyncio.wait_for(
            asyncio.gather(
                *(until_answered(arrival, *paths[arrival.path]) for arrival in arrivals)
            ),
            ANSWERED_WITHIN_S + 5,
        )
        await asyncio.wait_for(pushing, 60)
        await asyncio.wait_for(asyncio.gather(*reading), 30)
    finally:
        for task in reading:
            task.cancel()
        with contextlib.suppress(BaseException):
            await pushing

    slowest = max(arrivals, key=lambda arrival: arrival.answered_after_s)
    print(
        f"\nrestart: arrivals={len(arrivals)} slowest={slowest.path}"
        f" {slowest.answered_after_s:.2f}s tries={sum(a.tries for a in arrivals)}"
        f" retryable_errors={sum(len(a.errors) for a in arrivals)}"
    )
    for arrival in arrivals:
        assert 0 <= arrival.answered_after_s < ANSWERED_WITHIN_S, arrival
    for each in listeners:  # every push once, in order, across the restart
        assert each.received == list(range(count))
    assert stack.server.failures_since(log_offset) == []
    log = stack.server.log_since(log_offset)
    assert "internal error" not in log
    # Sockets open now: the listeners, the held one, one per arrival (the others closed).
    await asyncio.to_thread(
        poll_until,
        lambda: stack.census_sockets() == SUBSCRIBERS + 1 + len(arrivals),
        10,
        "the census counting every open socket",
    )


@pytest.mark.parametrize("stack_fixture", ["restart_stack", "daphne_restart_stack"])
async def test_requests_while_redis_is_away_are_answered_4503_and_logged_once(
    stack_fixture, request
):
    stack = request.getfixturevalue(stack_fixture)
    ws_url, origin = stack.server.ws_url("/ws/"), stack.server.origin
    held = await open_socket(ws_url, origin)
    await held.send(json.dumps({"op": "ping"}))
    await recv_until(held, lambda frame: frame.get("op") == "pong")
    log_offset = stack.server.log_size()

    stack.redis.stop()
    try:
        started = time.monotonic()
        await held.send(json.dumps({"op": "subscribe", "topic": "broadcast"}))
        refused = await recv_until(held, answer_of("broadcast", ("subscribed",)), timeout=30)
        answered_after_s = time.monotonic() - started
        assert refused == {
            "op": "error",
            "code": TRY_AGAIN,
            "msg": "temporarily unavailable (Redis): try again",
            "topic": "broadcast",
            "request": "subscribe",
        }
        await held.send(json.dumps({"op": "ping"}))  # the socket stays
        await recv_until(held, lambda frame: frame.get("op") == "pong")

        fresh = await open_socket(ws_url, origin)  # the layer cannot subscribe its channel
        assert json.loads(await fresh.recv())["code"] == TRY_AGAIN
        with pytest.raises(ConnectionClosed) as closed:
            await fresh.recv()
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == TRY_AGAIN

        seed = await open_socket(stack.server.ws_url("/ws/heartbeat/away/"), origin)
        assert json.loads(await seed.recv()) == {
            "msg": "temporarily unavailable (Redis): try again",
            "code": TRY_AGAIN,
            "data": [],
        }
        with pytest.raises(ConnectionClosed):
            await seed.recv()
    finally:
        stack.redis.launch()

    # Once Redis is back the same request is served, on the same socket.
    answer = await asyncio.wait_for(subscribe_until_served(held, "broadcast"), 60)
    assert answer["op"] == "subscribed"
    log = stack.server.log_since(log_offset)
    print(f"\naway: a subscribe was answered 4503 after {answered_after_s:.2f}s")
    # One line per server process that met the outage, not one per request or socket.
    assert 1 <= log.count("ws Redis unavailable") <= SERVER_PROCESSES, log
    assert stack.server.failures_since(log_offset) == []


def test_pages_open_during_an_outage_show_their_data_once_redis_is_back(
    restart_stack,
    browser,  # noqa: F811
):
    """One page was open before Redis stopped and subscribes during the outage (its
    subscribe is answered 4503); one opens during it (its socket is closed 4503). Once
    Redis is back, push.js has tried again on both, and both show data, no reload."""
    stack = restart_stack
    sales = sales_payload(5, timedelta(seconds=30))
    in_plain_thread(stack.push, "dashboard.sales", sales, "dashboard")
    before = browser.new_page()
    errors = open_dashboard(before, stack.server)
    wait_for_data(before, "sales", sales["computed_at"])

    stack.redis.stop()
    try:
        before.evaluate(
            """() => { window.late = [];
                       dashboardClient.subscribe("room.late", (data) => late.push(data)); }"""
        )
        before.wait_for_function(
            "dashboardClient._topics.get('room.late').retries >= 1", timeout=WAIT_MS
        )
        during = browser.new_page()
        during.on("pageerror", lambda error: errors.append(str(error)))
        during.goto(stack.server.http_url("/"))
        during.wait_for_function(
            "document.getElementById('state').dataset.state === 'reconnecting'", timeout=WAIT_MS
        )
    finally:
        stack.redis.launch()

    # push.js backs off up to 15 s between tries.
    assert wait_for_data(during, "sales", sales["computed_at"], timeout=30_000)["stale"] is False
    before.wait_for_function(
        "dashboardClient._topics.get('room.late').seq !== null", timeout=30_000
    )
    in_plain_thread(stack.push, "room.late", "after the outage")
    before.wait_for_function("late.includes('after the outage')", timeout=WAIT_MS)
    assert errors == []
