"""The chat service on the real database and the session's real Redis."""

from __future__ import annotations

import pytest
from django.db import transaction

from chat import services
from chat.models import Message, Room
from tests.chat.rooms import make_room, pushed
from tests.support.users import make_user
from ws import topics

pytestmark = pytest.mark.django_db(transaction=True)


def texts(room: Room) -> list[str]:
    return list(room.messages.values_list("text", flat=True))


def test_a_message_is_stored_then_pushed_to_the_room_topic(alice):
    room = make_room("svc-push", alice)
    message = services.send_message(alice, room, "  hello  ")

    assert texts(room) == ["hello"]
    assert message.seq == 1
    [(seq, data)] = pushed("chat.svc-push")
    assert seq == message.seq
    assert data["text"] == "hello"
    assert data["id"] == message.pk
    assert data["author"] == {"id": alice.pk, "name": "alice"}


def test_a_rolled_back_message_is_never_pushed(alice):
    room = make_room("svc-rollback", alice)

    class Abort(Exception):
        pass

    def send_then_fail() -> Message:
        with transaction.atomic():
            message = services.send_message(alice, room, "never happened")
            raise Abort(message)

    with pytest.raises(Abort) as aborted:
        send_then_fail()
    assert aborted.value.args[0].seq is None
    assert texts(room) == []
    assert pushed("chat.svc-rollback") == []

    services.send_message(alice, room, "this one")
    assert [data["text"] for _, data in pushed("chat.svc-rollback")] == ["this one"]


def test_members_only_rooms_refuse_everyone_else(alice, bob):
    room = make_room("svc-private", alice)
    services.send_message(alice, room, "members only")

    with pytest.raises(services.NotAllowed):
        services.send_message(bob, room, "let me in")
    with pytest.raises(services.NotAllowed):
        services.history(bob, room)
    assert not services.can_read(bob, room)
    assert list(services.readable_rooms(bob)) == []
    assert list(services.readable_rooms(alice)) == [room]
    assert texts(room) == ["members only"]


def test_open_rooms_take_any_signed_in_user_but_not_anonymous_or_inactive(alice):
    from django.contrib.auth.models import AnonymousUser

    room = make_room("svc-open", open_to_signed_in=True)
    services.send_message(alice, room, "hi all")
    inactive = make_user("gone", is_active=False)

    assert services.can_read(alice, room)
    assert not services.can_read(AnonymousUser(), room)
    assert not services.can_read(inactive, room)
    with pytest.raises(services.NotAllowed):
        services.send_message(inactive, room, "boo")


def test_a_direct_conversation_is_the_same_room_either_way_round(alice, bob, carol):
    room = services.direct_room(alice, bob)
    assert services.direct_room(bob, alice) == room
    assert room.is_direct
    assert not room.open_to_signed_in
    assert set(room.members.all()) == {alice, bob}
    assert room.slug == f"dm-{min(alice.pk, bob.pk)}-{max(alice.pk, bob.pk)}"

    services.send_message(bob, room, "just us")
    assert not services.can_read(carol, room)
    with pytest.raises(services.NotAllowed):
        services.history(carol, room)
    with pytest.raises(services.InvalidMessage):
        services.direct_room(alice, alice)


@pytest.mark.parametrize("text", ["", "   \n ", None, 42, "x" * 11])
def test_empty_too_long_or_non_text_messages_are_refused(alice, settings, text):
    settings.CHAT_MAX_MESSAGE_CHARS = 10
    room = make_room("svc-invalid", alice)
    with pytest.raises(services.InvalidMessage):
        services.send_message(alice, room, text)
    services.send_message(alice, room, "x" * 10)
    assert texts(room) == ["x" * 10]


def test_the_rate_limit_is_per_user_and_stores_nothing_refused(alice, bob, settings):
    settings.CHAT_RATE_MESSAGES = 2
    settings.CHAT_RATE_WINDOW_S = 600
    room = make_room("svc-rate", alice, bob)
    services.send_message(alice, room, "one")
    services.send_message(alice, room, "two")

    with pytest.raises(services.RateLimited) as refused:
        services.send_message(alice, room, "three")
    assert refused.value.code == 4429
    assert 0 < refused.value.retry_after_s <= 600
    services.send_message(bob, room, "bob is not limited by alice")
    assert texts(room) == ["one", "two", "bob is not limited by alice"]
    assert [data["text"] for _, data in pushed("chat.svc-rate")] == texts(room)


def test_history_pages_back_from_the_newest(alice):
    room = make_room("svc-history", alice)
    sent = [services.send_message(alice, room, f"m{n}").pk for n in range(5)]

    newest = services.history(alice, room, limit=2)
    assert [m.text for m in newest] == ["m3", "m4"]
    older = services.history(alice, room, before=newest[0].pk, limit=2)
    assert [m.text for m in older] == ["m1", "m2"]
    oldest = services.history(alice, room, before=older[0].pk, limit=2)
    assert [m.pk for m in oldest] == sent[:1]
    with pytest.raises(services.InvalidMessage):
        services.history(alice, room, limit=0)


def test_the_chat_topics_follow_room_membership(alice, bob):
    make_room("svc-topic", alice)
    make_room("svc-open-topic", open_to_signed_in=True)
    direct = services.direct_room(alice, bob)
    private, opened = topics.resolve("chat.svc-topic"), topics.resolve("chat.svc-open-topic")
    other = make_user("other")

    assert private.may_subscribe(alice)
    assert private.may_publish(alice)
    assert not private.may_subscribe(bob)
    assert not private.may_publish(bob)
    assert opened.may_subscribe(bob)
    assert opened.may_subscribe(other)
    assert topics.resolve(direct.topic).may_subscribe(bob)
    assert not topics.resolve(direct.topic).may_subscribe(other)
    # No such room: nobody, so nobody can listen in before a room takes the name.
    assert not topics.resolve("chat.svc-nowhere").may_subscribe(alice)
    assert not topics.resolve(f"chat.dm-{alice.pk}-{other.pk}").may_subscribe(alice)


def test_a_room_takes_seed_route_messages_only_when_it_allows_them(alice):
    make_room("svc-seed-yes", allow_client_messages=True)
    make_room("svc-seed-no")
    assert topics.resolve("room.svc-seed-yes").may_publish(None)
    assert not topics.resolve("room.svc-seed-no").may_publish(alice)
    assert not topics.resolve("room.svc-seed-none").may_publish(alice)


def test_a_direct_room_cannot_be_made_open():
    from django.db import IntegrityError

    with pytest.raises(IntegrityError), transaction.atomic():
        Room.objects.create(slug="dm-opened", is_direct=True, open_to_signed_in=True)
    assert not Message.objects.exists()
