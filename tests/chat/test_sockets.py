"""Chat over the sockets of the application in this process, signed in by session cookie."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from tests.chat.rooms import make_room
from tests.support.clients import open_socket, recv_json, recv_through, recv_until, subscribe
from tests.support.users import in_thread, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def limited_server(inprocess_server, settings):
    """The application in this process, where each user may send two chat messages in
    ten minutes."""
    settings.CHAT_RATE_MESSAGES, settings.CHAT_RATE_WINDOW_S = 2, 600
    return inprocess_server


async def user_socket(server: Any, user: Any) -> ClientConnection:
    """A socket on ``ws/`` signed in as ``user`` by session cookie (anonymous for None)."""
    headers = {"Cookie": await in_thread(session_cookie, user)} if user is not None else {}
    return await open_socket(server.ws_url("/ws/"), server.origin, additional_headers=headers)


async def publish(socket: ClientConnection, topic: str, data: Any) -> dict[str, Any]:
    """Publish; the answer (``published`` or ``error``) for that topic."""
    await socket.send(json.dumps({"op": "publish", "topic": topic, "data": data}))
    return await recv_until(
        socket, lambda f: f.get("topic") == topic and f.get("op") in ("published", "error")
    )


def is_message(frame: dict[str, Any]) -> bool:
    return frame.get("op") == "message"


async def next_message(socket: ClientConnection) -> dict[str, Any]:
    return await recv_until(socket, is_message)


async def stored_texts(slug: str) -> list[str]:
    from chat.models import Message

    def texts() -> list[str]:
        return list(Message.objects.filter(room__slug=slug).values_list("text", flat=True))

    return await in_thread(texts)


async def test_a_non_member_can_neither_subscribe_to_nor_post_in_a_room(
    inprocess_server, alice, bob
):
    await in_thread(make_room, "e2e-private", alice)
    intruder = await user_socket(inprocess_server, bob)
    member = await user_socket(inprocess_server, alice)

    refused = await subscribe(intruder, "chat.e2e-private")
    assert (refused["op"], refused["code"]) == ("error", 4003)
    refused = await publish(intruder, "chat.e2e-private", {"text": "let me in"})
    assert (refused["op"], refused["code"]) == ("error", 4003)
    nowhere = await subscribe(intruder, "chat.e2e-no-such-room")
    assert (nowhere["op"], nowhere["code"]) == ("error", 4003)
    await intruder.send(json.dumps({"op": "ping"}))
    assert await recv_json(intruder) == {"op": "pong"}  # refused, still connected

    assert (await subscribe(member, "chat.e2e-private"))["op"] == "subscribed"
    published = await publish(member, "chat.e2e-private", {"text": "members only"})
    first = await next_message(member)  # the intruder's attempt was never pushed
    assert (first["seq"], first["data"]["text"]) == (published["seq"], "members only")
    assert await stored_texts("e2e-private") == ["members only"]


async def test_a_direct_conversation_is_seen_by_its_two_users_only(
    inprocess_server, alice, bob, carol
):
    from chat.services import direct_room

    topic = (await in_thread(direct_room, alice, bob)).topic
    sockets = {
        user.username: await user_socket(inprocess_server, user) for user in (alice, bob, carol)
    }

    assert (await subscribe(sockets["carol"], topic))["code"] == 4003
    assert (await publish(sockets["carol"], topic, {"text": "hello?"}))["code"] == 4003
    assert (await subscribe(sockets["alice"], topic))["op"] == "subscribed"
    assert (await subscribe(sockets["bob"], topic))["op"] == "subscribed"
    presence = await recv_until(sockets["bob"], lambda f: f.get("op") == "presence")
    assert sorted(member["name"] for member in presence["members"]) == ["alice", "bob"]

    published = await publish(sockets["alice"], topic, {"text": "hi bob"})
    received = await next_message(sockets["bob"])
    assert received["seq"] == published["seq"]
    assert received["msg"] == "chat.message"
    assert received["data"]["text"] == "hi bob"
    assert received["data"]["author"] == {"id": alice.pk, "name": "alice"}


async def test_messages_arrive_in_order_and_a_reconnecting_client_resumes_without_loss(
    inprocess_server, alice, bob
):
    await in_thread(make_room, "e2e-resume", alice, bob)
    topic = "chat.e2e-resume"
    sender = await user_socket(inprocess_server, alice)
    reader = await user_socket(inprocess_server, bob)
    await subscribe(sender, topic)
    start = await subscribe(reader, topic)

    for n in range(3):  # sent back to back, no waiting in between
        await sender.send(json.dumps({"op": "publish", "topic": topic, "data": {"text": f"m{n}"}}))
    acks = [await recv_until(sender, lambda f: f.get("op") == "published") for _ in range(3)]
    live = [await next_message(reader) for _ in range(3)]
    assert [f["seq"] for f in live] == [ack["seq"] for ack in acks]
    assert [(f["seq"], f["data"]["text"]) for f in live] == [
        (start["seq"] + 1, "m0"),
        (start["seq"] + 2, "m1"),
        (start["seq"] + 3, "m2"),
    ]

    await reader.close()
    for n in range(3, 6):  # while bob is away
        assert (await publish(sender, topic, {"text": f"m{n}"}))["op"] == "published"

    reader = await user_socket(inprocess_server, bob)
    last_seq = live[-1]["seq"]
    await reader.send(
        json.dumps({"op": "subscribe", "topic": topic, "since": last_seq, "epoch": start["epoch"]})
    )
    frames = await recv_through(reader, lambda f: f.get("op") == "presence")
    assert frames[0]["op"] == "subscribed"
    assert frames[0]["recovered"] is True
    assert [(f["seq"], f["data"]["text"]) for f in frames if is_message(f)] == [
        (last_seq + 1, "m3"),
        (last_seq + 2, "m4"),
        (last_seq + 3, "m5"),
    ]
    await publish(sender, topic, {"text": "m6"})
    assert (await next_message(reader))["seq"] == last_seq + 4
    assert await stored_texts("e2e-resume") == [f"m{n}" for n in range(7)]


async def test_a_rolled_back_message_never_reaches_a_socket(inprocess_server, alice, bob):
    from django.db import transaction

    from chat.services import send_message

    room = await in_thread(make_room, "e2e-rollback", alice, bob)
    reader = await user_socket(inprocess_server, alice)
    start = await subscribe(reader, room.topic)

    class Abort(Exception):
        pass

    def rolled_back_then_committed() -> None:
        try:
            with transaction.atomic():
                send_message(bob, room, "rolled back")
                raise Abort
        except Abort:
            pass
        send_message(bob, room, "committed")

    await in_thread(rolled_back_then_committed)
    first = await next_message(reader)
    assert (first["seq"], first["data"]["text"]) == (start["seq"] + 1, "committed")
    assert await stored_texts("e2e-rollback") == ["committed"]


async def test_over_the_rate_limit_a_publish_gets_4429_and_the_socket_stays(
    limited_server, alice, bob
):
    await in_thread(make_room, "e2e-rate", alice, bob)
    topic = "chat.e2e-rate"
    talker = await user_socket(limited_server, alice)
    listener = await user_socket(limited_server, bob)
    await subscribe(talker, topic)
    await subscribe(listener, topic)

    assert (await publish(talker, topic, {"text": "one"}))["op"] == "published"
    assert (await publish(talker, topic, {"text": "two"}))["op"] == "published"
    refused = await publish(talker, topic, {"text": "three"})
    assert (refused["op"], refused["code"], refused["topic"]) == ("error", 4429, topic)
    assert "rate limited" in refused["msg"]
    heard = [await next_message(listener) for _ in range(2)]
    assert [frame["data"]["text"] for frame in heard] == ["one", "two"]

    await talker.send(json.dumps({"op": "ping"}))
    assert await recv_until(talker, lambda f: f.get("op") == "pong") == {"op": "pong"}
    # Still subscribed: bob's message reaches alice, and it follows "two" with no
    # gap: "three" was never pushed.
    from_bob = await publish(listener, topic, {"text": "from bob"})
    assert from_bob["seq"] == heard[-1]["seq"] + 1
    received = await recv_until(talker, lambda f: is_message(f) and f["seq"] == from_bob["seq"])
    assert received["data"]["text"] == "from bob"
    assert await stored_texts("e2e-rate") == ["one", "two", "from bob"]


async def test_typing_reaches_the_others_but_is_neither_stored_nor_replayed(
    inprocess_server, alice, bob
):
    await in_thread(partial(make_room, "e2e-typing", open_to_signed_in=True))
    topic = "chat.e2e-typing"
    typist = await user_socket(inprocess_server, alice)
    watcher = await user_socket(inprocess_server, bob)
    await subscribe(typist, topic)
    start = await subscribe(watcher, topic)

    published = await publish(typist, topic, {"type": "typing"})
    assert published == {"op": "published", "topic": topic}  # no seq: nothing numbered
    assert await recv_until(watcher, lambda f: f.get("op") == "ephemeral") == {
        "op": "ephemeral",
        "topic": topic,
        "data": {"type": "typing", "user": {"id": alice.pk, "name": "alice"}},
    }
    assert await stored_texts("e2e-typing") == []

    # A resume from before the typing has nothing to replay: not a stale "typing".
    await watcher.close()
    watcher = await user_socket(inprocess_server, bob)
    await watcher.send(
        json.dumps(
            {"op": "subscribe", "topic": topic, "since": start["seq"], "epoch": start["epoch"]}
        )
    )
    frames = await recv_through(watcher, lambda f: f.get("op") == "presence")
    assert [f["op"] for f in frames] == ["subscribed", "presence"]
    assert (frames[0]["seq"], frames[0]["recovered"]) == (start["seq"], True)


async def test_a_removed_member_loses_the_subscription(inprocess_server, alice):
    room = await in_thread(make_room, "e2e-removed", alice)
    socket = await user_socket(inprocess_server, alice)
    await subscribe(socket, room.topic)

    await in_thread(room.members.remove, alice)
    revoked = await recv_until(socket, lambda f: f.get("op") == "error")
    assert (revoked["code"], revoked["topic"]) == (4003, room.topic)
    assert "left the room" in revoked["msg"]


async def test_a_seed_route_client_talks_to_its_room_when_the_room_allows_it(inprocess_server):
    await in_thread(partial(make_room, "e2e-seedtalk", allow_client_messages=True))
    await in_thread(make_room, "e2e-seedquiet")
    url = inprocess_server.ws_url("/ws/heartbeat/e2e-seedtalk/")
    one = await open_socket(url, inprocess_server.origin)
    two = await open_socket(url, inprocess_server.origin)
    assert (await recv_json(one))["msg"] == "heartbeat"
    assert (await recv_json(two))["msg"] == "heartbeat"
    multiplexed = await user_socket(inprocess_server, None)
    await subscribe(multiplexed, "room.e2e-seedtalk")

    await one.send(json.dumps({"message": "hi"}))
    assert await recv_json(one) == {"message": "hi"}  # as the seed: everyone, the sender too
    assert await recv_json(two) == {"message": "hi"}
    assert await recv_until(multiplexed, lambda f: f.get("op") == "ephemeral") == {
        "op": "ephemeral",
        "topic": "room.e2e-seedtalk",
        "data": {"message": "hi"},
    }

    quiet = await open_socket(
        inprocess_server.ws_url("/ws/heartbeat/e2e-seedquiet/"), inprocess_server.origin
    )
    await recv_json(quiet)
    await quiet.send(json.dumps({"message": "hi"}))
    assert (await recv_json(quiet))["code"] == 4003
