"""People, rooms made on the page, unread counts, missed calls and mute, at the server.

Every change a page shows arrives as a push: these tests read the pushes from the
topics' histories in the real Redis, and check that a refused request writes nothing.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client

from chat import calls, services
from chat.models import Message, Room, RoomReader
from tests.chat.rooms import make_room, pushed
from tests.support.users import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def signed_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def post_json(client: Client, url: str, body: Any) -> Any:
    return client.post(url, json.dumps(body), content_type="application/json")


def room_events(user: Any) -> list[dict[str, Any]]:
    return [data for _, data in pushed(f"user.{user.pk}") if data["type"] == "rooms"]


def unread_pushes(user: Any, slug: str) -> list[int]:
    return [
        data["unread"]
        for _, data in pushed(f"user.{user.pk}")
        if data["type"] == "unread" and data["room"] == slug
    ]


def may_add_rooms(user: Any) -> Any:
    user.user_permissions.add(Permission.objects.get(codename="add_room"))
    return type(user).objects.get(pk=user.pk)  # a fresh one: permissions are cached


def no_one_but_bob(user: Any) -> Any:
    """A CHAT_CONTACT_RULE for the tests: everyone may contact bob, and only him."""
    from chat.people import active_users

    return active_users(user).filter(username="bob")


# --- people ------------------------------------------------------------------------------


def test_the_picker_lists_the_people_one_may_contact_by_name(alice, bob, carol):
    make_user("bobby")
    gone = make_user("bob-gone")
    gone.is_active = False
    gone.save()

    names = [p["name"] for p in signed_in(alice).get("/chat/api/people").json()["people"]]
    assert names == ["bob", "bobby", "carol"]  # never oneself, never an inactive user
    found = signed_in(alice).get("/chat/api/people", {"q": "BOB"}).json()["people"]
    assert found == [{"id": bob.pk, "name": "bob"}, {"id": found[1]["id"], "name": "bobby"}]
    assert len(signed_in(alice).get("/chat/api/people", {"limit": "1"}).json()["people"]) == 1

    for bad in ({"q": "x" * 101}, {"limit": "0"}, {"limit": "51"}, {"limit": "two"}):
        answer = signed_in(alice).get("/chat/api/people", bad)
        assert answer.status_code == 400, bad
        assert answer.json()["error"]
    assert Client().get("/chat/api/people").status_code == 401


def test_a_contact_rule_narrows_the_picker_direct_rooms_and_new_rooms(alice, bob, carol, settings):
    settings.CHAT_CONTACT_RULE = "tests.chat.test_daily_use.no_one_but_bob"
    alice = may_add_rooms(alice)
    assert signed_in(alice).get("/chat/api/people").json()["people"] == [
        {"id": bob.pk, "name": "bob"}
    ]
    refused = signed_in(alice).post(f"/chat/api/direct/{carol.pk}")
    assert refused.status_code == 403
    made = post_json(signed_in(alice), "/chat/api/rooms", {"title": "T", "members": [carol.pk]})
    assert made.status_code == 400
    assert "may contact" in made.json()["error"]
    assert not Room.objects.exists()
    assert signed_in(alice).post(f"/chat/api/direct/{bob.pk}").status_code == 200


def test_a_new_direct_conversation_appears_in_both_users_lists_once(alice, bob):
    made = signed_in(alice).post(f"/chat/api/direct/{bob.pk}").json()["room"]
    assert (made["unread"], made["ring"]) == (0, True)
    signed_in(bob).post(f"/chat/api/direct/{alice.pk}")  # found, not made: no second push

    for user, partner in ((alice, bob), (bob, alice)):
        (event,) = room_events(user)
        assert event["event"] == "added"
        assert event["room"]["slug"] == made["slug"]
        assert event["room"]["with"] == {"id": partner.pk, "name": partner.username}


# --- rooms made on the page -----------------------------------------------------------------


def test_without_the_permission_no_room_is_made(alice, bob):
    answer = post_json(signed_in(alice), "/chat/api/rooms", {"title": "Mine", "members": []})
    assert answer.status_code == 403
    assert "chat.add_room" in answer.json()["error"]
    assert not Room.objects.exists()
    assert room_events(alice) == []


def test_a_room_made_on_the_page_reaches_its_members_and_a_leaver_loses_it(alice, bob, carol):
    alice = may_add_rooms(alice)
    answer = post_json(
        signed_in(alice), "/chat/api/rooms", {"title": "Release plan", "members": [bob.pk]}
    )
    assert answer.status_code == 201
    room = answer.json()["room"]
    assert (room["title"], room["open"], room["direct"]) == ("Release plan", False, False)
    assert set(Room.objects.get(slug=room["slug"]).members.all()) == {alice, bob}
    for user in (alice, bob):
        assert [(e["event"], e["room"]["slug"]) for e in room_events(user)] == [
            ("added", room["slug"])
        ]
    assert room_events(carol) == []
    assert signed_in(carol).get(f"/chat/api/rooms/{room['slug']}/messages").status_code == 403

    # Same title again: another room, another slug.
    again = post_json(signed_in(alice), "/chat/api/rooms", {"title": "Release plan"}).json()
    assert again["room"]["slug"] != room["slug"]

    assert signed_in(bob).post(f"/chat/api/rooms/{room['slug']}/leave").json() == {
        "left": room["slug"]
    }
    assert [e["event"] for e in room_events(bob)] == ["added", "removed"]
    assert signed_in(bob).get(f"/chat/api/rooms/{room['slug']}/messages").status_code == 403
    assert signed_in(bob).post(f"/chat/api/rooms/{room['slug']}/leave").status_code == 403


def test_an_open_room_is_announced_to_every_signed_in_page(alice, bob):
    alice = may_add_rooms(alice)
    room = post_json(signed_in(alice), "/chat/api/rooms", {"title": "Town hall", "open": True})
    slug = room.json()["room"]["slug"]
    ((_, event),) = pushed("chat._rooms")
    assert (event["event"], event["room"]["slug"], event["room"]["open"]) == ("added", slug, True)
    assert slug in {r["slug"] for r in signed_in(bob).get("/chat/api/rooms").json()["rooms"]}


@pytest.mark.parametrize(
    "body",
    [
        {"title": ""},
        {"title": "   "},
        {"title": "x" * 201},
        {"title": 7},
        {"title": "T", "open": "yes"},
        {"title": "T", "members": "bob"},
        {"title": "T", "members": [True]},
        {"title": "T", "members": [999_999]},
        {"title": "T", "members": list(range(1, 200))},
        ["not", "an", "object"],
    ],
)
def test_a_bad_new_room_is_refused_and_nothing_is_written(alice, body):
    alice = may_add_rooms(alice)
    answer = post_json(signed_in(alice), "/chat/api/rooms", body)
    assert answer.status_code == 400
    assert answer.json()["error"]
    assert not Room.objects.exists()
    assert room_events(alice) == []


def test_direct_conversations_cannot_be_left(alice, bob):
    room = services.direct_room(alice, bob)
    assert signed_in(alice).post(f"/chat/api/rooms/{room.slug}/leave").status_code == 400
    assert room.members.count() == 2


def test_no_room_takes_a_name_kept_for_chats_own_topics():
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        Room(slug="_rooms").full_clean()


# --- unread counts -------------------------------------------------------------------------


def test_unread_counts_are_pushed_to_the_rooms_readers_and_cleared_by_reading(alice, bob, carol):
    room = make_room("unread-team", alice, bob)
    sent = [services.send_message(alice, room, f"m{n}") for n in range(3)]

    assert unread_pushes(bob, room.slug) == [1, 2, 3]
    assert unread_pushes(alice, room.slug) == [0, 0, 0]  # one's own messages are read
    assert unread_pushes(carol, room.slug) == []  # not a member: never told
    listed = {r["slug"]: r for r in signed_in(bob).get("/chat/api/rooms").json()["rooms"]}
    assert listed[room.slug]["unread"] == 3

    url = f"/chat/api/rooms/{room.slug}/read"
    answer = post_json(signed_in(bob), url, {"last_read": sent[1].pk}).json()
    assert answer == {"type": "unread", "room": room.slug, "unread": 1, "last_read": sent[1].pk}
    post_json(signed_in(bob), url, {"last_read": sent[2].pk})
    post_json(signed_in(bob), url, {"last_read": sent[0].pk})  # never moves back
    assert unread_pushes(bob, room.slug) == [1, 2, 3, 1, 0, 0]
    assert RoomReader.objects.get(user=bob, room=room).last_read == sent[2].pk
    listed = {r["slug"]: r for r in signed_in(bob).get("/chat/api/rooms").json()["rooms"]}
    assert (listed[room.slug]["unread"], listed[room.slug]["last_read"]) == (0, sent[2].pk)

    assert post_json(signed_in(carol), url, {"last_read": sent[2].pk}).status_code == 403


@pytest.mark.parametrize("position", [0, -1, "3", True, None, 10**12])
def test_a_bad_last_read_position_is_refused_and_nothing_moves(alice, bob, position):
    room = make_room("unread-bad", alice, bob)
    services.send_message(alice, room, "one")
    answer = post_json(signed_in(bob), f"/chat/api/rooms/{room.slug}/read", {"last_read": position})
    assert answer.status_code == 400
    assert answer.json()["error"]
    assert not RoomReader.objects.filter(user=bob, last_read__isnull=False).exists()


def test_an_open_room_counts_for_those_who_opened_it(alice, bob, carol):
    room = make_room("unread-open", open_to_signed_in=True)
    first = services.send_message(alice, room, "hello")
    post_json(signed_in(bob), f"/chat/api/rooms/{room.slug}/read", {"last_read": first.pk})
    services.send_message(alice, room, "again")
    assert unread_pushes(bob, room.slug) == [0, 1]
    assert unread_pushes(carol, room.slug) == []
    listed = {r["slug"]: r for r in signed_in(carol).get("/chat/api/rooms").json()["rooms"]}
    assert listed[room.slug]["unread"] == 0


# --- rings, missed calls and mute ------------------------------------------------------------


def test_an_unanswered_call_leaves_a_missed_call_message_and_is_listed(alice, bob, carol):
    room = services.direct_room(alice, bob)
    calls.invite(alice, room)
    assert signed_in(bob).get("/chat/api/calls", {"ringing": "1"}).json()["calls"][0]["from"] == {
        "id": alice.pk,
        "name": "alice",
    }
    call_id = calls.current_state(alice, room)["call"]
    calls.end_unanswered(call_id)

    (note,) = Message.objects.filter(room=room)
    assert (note.kind, note.text, note.author, note.call_id) == (
        "missed_call",
        "Missed call from alice",
        alice,
        call_id,
    )
    ((_, data),) = pushed(room.topic)
    assert (data["kind"], data["text"], data["call"]) == ("missed_call", note.text, call_id)
    assert unread_pushes(bob, room.slug) == [1]

    (missed,) = signed_in(bob).get("/chat/api/calls", {"missed": "1"}).json()["calls"]
    assert (missed["id"], missed["room"], missed["reason"]) == (call_id, room.slug, "unanswered")
    assert signed_in(alice).get("/chat/api/calls", {"missed": "1"}).json()["calls"] == []
    assert signed_in(carol).get("/chat/api/calls", {"missed": "1"}).json()["calls"] == []
    assert signed_in(bob).get("/chat/api/calls", {"ringing": "1"}).json()["calls"] == []
    assert signed_in(bob).get("/chat/api/calls").status_code == 400


def test_a_declined_or_answered_call_is_not_missed(alice, bob):
    room = services.direct_room(alice, bob)
    calls.invite(alice, room)
    calls.decline(bob, room)
    calls.invite(alice, room)
    calls.accept(bob, room)
    calls.hangup(bob, room)
    assert not Message.objects.filter(room=room).exists()
    assert signed_in(bob).get("/chat/api/calls", {"missed": "1"}).json()["calls"] == []


def test_open_rooms_ring_only_those_who_asked(alice, bob, carol):
    room = make_room("ring-open", open_to_signed_in=True)
    assert calls.ring_targets(room, alice.pk) == []
    answer = post_json(signed_in(bob), f"/chat/api/rooms/{room.slug}/ring", {"ring": True})
    assert answer.json()["room"]["ring"] is True
    assert calls.ring_targets(room, alice.pk) == [bob.pk]
    assert (
        post_json(signed_in(bob), f"/chat/api/rooms/{room.slug}/ring", {"ring": 1}).status_code
        == 400
    )

    members_only = make_room("ring-members", alice, bob)
    refused = post_json(
        signed_in(bob), f"/chat/api/rooms/{members_only.slug}/ring", {"ring": False}
    )
    assert refused.status_code == 400
    assert calls.ring_targets(members_only, alice.pk) == [bob.pk]  # never carol


def test_muting_is_part_of_the_calls_state(alice, bob, carol):
    room = services.direct_room(alice, bob)
    calls.invite(alice, room)
    calls.accept(bob, room)

    calls.set_muted(bob, room, True)
    assert calls.set_muted(bob, room, True) is None  # nothing changed: nothing pushed
    state = calls.current_state(alice, room)
    assert {p["name"]: p["muted"] for p in state["participants"]} == {"alice": False, "bob": True}
    states = [data for _, data in pushed(f"call.{room.slug}")]
    assert (states[-1]["event"], states[-1]["user"]["name"]) == ("mute", "bob")

    for bad in ("yes", 1, None):
        with pytest.raises(services.InvalidMessage):
            calls.set_muted(bob, room, bad)
    with pytest.raises(services.NotAllowed):
        calls.set_muted(carol, room, True)
    calls.hangup(alice, room)
    with pytest.raises(calls.NoCall):
        calls.set_muted(bob, room, False)
