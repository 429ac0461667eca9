"""Presence: who is on a topic, across daphne processes, and after one of them is killed."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.clients import FRAME_TIMEOUT_S, open_socket, recv_json, recv_until, subscribe
from tests.support.processes import DaphneServer, server_with_settings
from tests.support.users import make_user, session_cookie
from ws import apush

pytestmark = pytest.mark.django_db(transaction=True)

# Short enough that a dead process's members are swept within seconds.
TTL_S, REFRESH_S = 3.0, 1.0


def presence_settings() -> dict[str, str]:
    return {"PUSH_PRESENCE_TTL_S": str(TTL_S), "PUSH_PRESENCE_REFRESH_S": str(REFRESH_S)}


@pytest.fixture
def servers(server_factory):
    """Two daphne processes on the same Redis, with a short presence TTL."""
    settings = presence_settings()
    return [server_factory.start("daphne", copy=n, **settings) for n in (1, 2)]


@pytest.fixture
def doomed_server(child_env, log_dir):
    """A third daphne, for a test to kill."""
    with server_with_settings(
        child_env, log_dir, "daphne-presence-doomed", **presence_settings()
    ) as server:
        yield server


@pytest.fixture
def cookies() -> dict[str, str]:
    """Session cookies of alice, bob and carol, by name; and the rooms the tests meet in.

    ``call.<room>`` (a topic with presence) is for those who may read the chat room
    of that slug (``chat/transport.py``): these rooms are open to any signed-in user.
    """
    from chat.models import Room

    for slug in ("pr-two", "pr-same", "pr-kill"):
        Room.objects.create(slug=slug, title=slug, open_to_signed_in=True)
    return {name: session_cookie(make_user(name)) for name in ("alice", "bob", "carol")}


async def member_socket(server: DaphneServer, cookie: str | None) -> ClientConnection:
    headers = {"Cookie": cookie} if cookie else {}
    return await open_socket(server.ws_url("/ws/"), server.origin, additional_headers=headers)


async def join(socket: ClientConnection, topic: str) -> list[str]:
    """Subscribe; the names in the ``presence`` frame that follows ``subscribed``, sorted."""
    assert (await subscribe(socket, topic))["op"] == "subscribed"
    frame = await recv_until(socket, lambda f: f.get("op") == "presence")
    assert frame["topic"] == topic
    # Members come ordered by id ("user:10" before "user:9"): compare names as a set.
    return sorted(member["name"] for member in frame["members"])


async def changes_until(
    socket: ClientConnection, last: Any, timeout: float = FRAME_TIMEOUT_S
) -> list[tuple[str, str]]:
    """The ``join``/``leave`` frames (op, name) up to and including the first ``last(frame)``."""
    seen: list[tuple[str, str]] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await socket.recv())
            if frame.get("op") in ("join", "leave"):
                seen.append((frame["op"], frame["member"]["name"]))
            if last(frame):
                return seen


def change(op: str, name: str) -> Any:
    return lambda f: f.get("op") == op and f.get("member", {}).get("name") == name


async def marker(socket: ClientConnection, topic: str) -> list[tuple[str, str]]:
    """Push a message to ``topic``; the changes ``socket`` got before it.

    Events on one topic reach a socket in the order Redis published them, so
    whatever an earlier action announced arrives before this message.
    """
    seq = await apush(topic, "marker")
    return await changes_until(socket, lambda f: f.get("op") == "message" and f["seq"] == seq)


async def test_members_across_two_processes(servers, cookies):
    one, two = servers
    topic = "call.pr-two"
    alice = await member_socket(one, cookies["alice"])
    bob = await member_socket(two, cookies["bob"])

    assert await join(alice, topic) == ["alice"]
    assert await join(bob, topic) == ["alice", "bob"]
    # Alice hears bob arrive, and never of herself (her list already held her).
    assert await changes_until(alice, change("join", "bob")) == [("join", "bob")]

    await bob.send(json.dumps({"op": "unsubscribe", "topic": topic}))
    assert await changes_until(bob, lambda f: f.get("op") == "unsubscribed") == []
    assert await changes_until(alice, change("leave", "bob")) == [("leave", "bob")]
    assert await marker(alice, topic) == []


async def test_one_user_on_two_sockets_joins_once_and_leaves_once(servers, cookies):
    one, two = servers
    topic = "call.pr-same"
    carol = await member_socket(one, cookies["carol"])
    first = await member_socket(one, cookies["alice"])
    second = await member_socket(two, cookies["alice"])
    assert await join(carol, topic) == ["carol"]

    assert await join(first, topic) == ["alice", "carol"]
    assert await join(second, topic) == ["alice", "carol"]
    assert await marker(carol, topic) == [("join", "alice")]

    await first.send(json.dumps({"op": "unsubscribe", "topic": topic}))
    await recv_until(first, lambda f: f.get("op") == "unsubscribed")
    assert await marker(carol, topic) == []  # alice is still here, on her other socket

    await second.close()
    assert await changes_until(carol, change("leave", "alice")) == [("leave", "alice")]
    assert await marker(carol, topic) == []


async def test_a_killed_process_members_leave_within_the_ttl(servers, doomed_server, cookies):
    one, _ = servers
    topic = "call.pr-kill"
    alice = await member_socket(one, cookies["alice"])
    bob = await member_socket(doomed_server, cookies["bob"])
    assert await join(alice, topic) == ["alice"]
    assert await join(bob, topic) == ["alice", "bob"]
    await changes_until(alice, change("join", "bob"))

    # The passage of time is what is tested here: while bob's process lives it keeps
    # him present well past the TTL.
    with pytest.raises(TimeoutError):
        await changes_until(alice, lambda f: f.get("op") == "leave", TTL_S + 2 * REFRESH_S)
    assert await marker(alice, topic) == []

    doomed_server.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    # Bob's entry expires at most a TTL after his process's last refresh; alice's
    # process sweeps every REFRESH_S.
    within = TTL_S + 2 * REFRESH_S + 1
    assert await changes_until(alice, change("leave", "bob"), within) == [("leave", "bob")]
    assert time.monotonic() - killed_at < within

    # Someone arriving now sees only who is really there.
    carol = await member_socket(one, cookies["carol"])
    assert await join(carol, topic) == ["alice", "carol"]


async def test_a_topic_without_presence_sends_no_presence_frames(servers):
    one, _ = servers
    socket = await member_socket(one, None)
    assert (await subscribe(socket, "room.pr-none"))["op"] == "subscribed"
    await socket.send('{"op": "ping"}')
    assert await recv_json(socket) == {"op": "pong"}  # nothing in between
    seq = await apush("room.pr-none", "after")
    assert await recv_json(socket) == {
        "op": "message", "topic": "room.pr-none", "seq": seq, "msg": "success", "code": 200,
        "data": "after",
    }  # fmt: skip
