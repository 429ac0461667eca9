"""Voice-call signalling: the state machine on the real database and Redis, then over daphne.

The service tests call ``chat.calls`` and read what was pushed from the topic's
history; the socket tests run real clients against daphne (two processes for
the race, and one killed for the sweep of calls nobody's server holds any
more), and a real Celery worker for the ring timeout.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import signal
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

import pytest
from django.db import IntegrityError, transaction
from django.db.models.signals import post_save
from django.test import Client
from django.utils import timezone
from websockets.asyncio.client import ClientConnection

from chat import calls, services, transport
from chat.models import Call, CallParticipant
from chat.tasks import sweep_calls
from tests.chat.rooms import make_room, pushed
from tests.support.clients import FRAME_TIMEOUT_S, open_socket, subscribe
from tests.support.processes import DaphneServer, server_with_settings
from tests.support.users import in_thread, session_cookie
from tests.support.waiting import poll_until
from ws import keys, presence, topics

pytestmark = pytest.mark.django_db(transaction=True)

Frame = dict[str, Any]


def states(topic: str) -> list[Frame]:
    """The ``call.state`` messages pushed to ``topic``, in order."""
    return [data for _, data in pushed(topic)]


def names(state: Frame) -> list[str]:
    return [member["name"] for member in state["participants"]]


def is_state(frame: Frame, topic: str) -> bool:
    """Whether ``frame`` is a ``call.state`` message of ``topic``."""
    return frame.get("op") == "message" and frame.get("topic") == topic


# --- the service: every transition ---------------------------------------------------------


def test_a_group_call_rings_turns_active_and_ends_when_fewer_than_two_are_left(alice, bob, carol):
    room = make_room("svc-call-group", alice, bob, carol)
    topic = calls.call_topic(room)

    first = calls.invite(alice, room)
    assert calls.invite(alice, room) is None  # already in it: nothing changes
    calls.invite(bob, room)  # a second invite joins (answers) the ringing call
    calls.accept(carol, room)
    calls.hangup(carol, room)
    calls.accept(carol, room)  # back again: a newcomer once more
    calls.hangup(bob, room)
    last = calls.hangup(carol, room)

    pushed_states = states(topic)
    assert [(s["state"], s["event"], s["user"]["name"], names(s)) for s in pushed_states] == [
        ("ringing", "invite", "alice", ["alice"]),
        ("active", "invite", "bob", ["alice", "bob"]),
        ("active", "accept", "carol", ["alice", "bob", "carol"]),
        ("active", "hangup", "carol", ["alice", "bob"]),
        ("active", "accept", "carol", ["alice", "bob", "carol"]),
        ("active", "hangup", "bob", ["alice", "carol"]),
        ("ended", "hangup", "carol", []),
    ]
    # Whoever joins offers to everyone already there; nobody else offers.
    assert [s["offer_to"] for s in pushed_states] == [
        [],
        [alice.pk],
        [alice.pk, bob.pk],
        [],
        [alice.pk, bob.pk],
        [],
        [],
    ]
    assert pushed_states[-1]["reason"] == "hung_up"
    assert [s["reason"] for s in pushed_states[:-1]] == [None] * 6
    assert len({s["call"] for s in pushed_states}) == 1
    assert (first, last) == (1, 7)
    call = Call.objects.get()
    assert (call.state, call.end_reason, call.started_by) == ("ended", "hung_up", alice)
    assert call.answered_at is not None
    assert call.ended_at is not None

    with pytest.raises(calls.NoCall):
        calls.hangup(alice, room)  # ended: nothing to leave
    with pytest.raises(calls.NoCall):
        calls.accept(alice, room)
    calls.invite(bob, room)  # a new call, not the old one
    assert Call.objects.filter(room=room).count() == 2


def test_a_ringing_call_ends_when_cancelled_or_when_its_caller_leaves(alice, bob, settings):
    settings.CALL_REJOIN_GRACE_S = 0  # no grace period: a closed socket leaves at once
    room = services.direct_room(alice, bob)
    topic = calls.call_topic(room)

    calls.invite(alice, room)
    with pytest.raises(calls.NoCall):
        calls.cancel(bob, room)  # not the caller's to cancel
    calls.cancel(alice, room)
    calls.invite(alice, room)
    calls.hangup(alice, room)  # the caller hanging up a ringing call cancels it too
    calls.invite(bob, room)
    calls.participant_gone(room.slug, bob.pk)  # the caller's last socket closed

    assert [(s["state"], s["event"], s["reason"]) for s in states(topic)] == [
        ("ringing", "invite", None),
        ("ended", "cancel", "cancelled"),
        ("ringing", "invite", None),
        ("ended", "hangup", "cancelled"),
        ("ringing", "invite", None),
        ("ended", "disconnect", "disconnected"),
    ]
    assert list(Call.objects.values_list("state", flat=True)) == ["ended"] * 3


def test_an_answered_call_cannot_be_cancelled_and_a_disconnect_ends_it(alice, bob, settings):
    settings.CALL_REJOIN_GRACE_S = 0
    room = services.direct_room(alice, bob)
    calls.invite(alice, room)
    calls.accept(bob, room)

    with pytest.raises(services.InvalidMessage):
        calls.cancel(alice, room)
    with pytest.raises(services.InvalidMessage):
        calls.decline(bob, room)  # in the call: hang up instead
    assert calls.participant_gone(room.slug, 999_999) is None  # nobody we know
    calls.participant_gone(room.slug, bob.pk)

    last = states(calls.call_topic(room))[-1]
    assert (last["state"], last["event"], last["user"]["name"], last["reason"]) == (
        "ended",
        "disconnect",
        "bob",
        "disconnected",
    )
    assert calls.participant_gone(room.slug, bob.pk) is None  # already over: once only


def test_a_call_ends_declined_once_every_member_declined(alice, bob, carol):
    direct = services.direct_room(alice, bob)
    calls.invite(alice, direct)
    calls.decline(bob, direct)
    assert [(s["state"], s["reason"]) for s in states(calls.call_topic(direct))] == [
        ("ringing", None),
        ("ended", "declined"),
    ]

    group = make_room("svc-call-declined", alice, bob, carol)
    calls.invite(alice, group)
    calls.decline(bob, group)
    calls.decline(carol, group)
    assert [(s["state"], s["event"], s["reason"]) for s in states(calls.call_topic(group))] == [
        ("ringing", "invite", None),
        ("ringing", "decline", None),  # carol may still answer
        ("ended", "decline", "declined"),
    ]

    # An open room has no list of who is rung: a decline never ends the call.
    lobby = make_room("svc-call-open", open_to_signed_in=True)
    calls.invite(alice, lobby)
    calls.decline(bob, lobby)
    calls.decline(carol, lobby)
    assert Call.objects.get(room=lobby).state == "ringing"


def test_a_full_call_refuses_one_more(alice, bob, carol, settings):
    settings.CALL_MAX_PARTICIPANTS = 2
    room = make_room("svc-call-full", alice, bob, carol)
    calls.invite(alice, room)
    calls.accept(bob, room)

    with pytest.raises(calls.CallFull):
        calls.accept(carol, room)
    assert names(states(calls.call_topic(room))[-1]) == ["alice", "bob"]
    assert Call.objects.get().participants.filter(user=carol).count() == 0


def test_the_ring_timeout_ends_only_the_ringing_call_it_was_scheduled_for(alice, bob, carol):
    room = make_room("svc-call-timeout", alice, bob)
    calls.invite(alice, room)
    call = Call.objects.get()
    created = call.created_at.isoformat()

    assert calls.end_unanswered(call.pk, "2001-01-01T00:00:00+00:00") is None  # another call
    seq = calls.end_unanswered(call.pk, created)
    assert seq is not None
    assert calls.end_unanswered(call.pk, created) is None  # a re-run does nothing
    ended = states(calls.call_topic(room))[-1]
    assert (ended["state"], ended["event"], ended["reason"]) == ("ended", "timeout", "unanswered")

    calls.invite(alice, room)
    calls.accept(bob, room)
    answered = Call.objects.get(state="active")
    assert calls.end_unanswered(answered.pk, answered.created_at.isoformat()) is None
    assert Call.objects.get(pk=answered.pk).state == "active"


def test_an_expired_ringing_call_is_ended_by_the_next_action_without_a_worker(alice, bob, settings):
    room = services.direct_room(alice, bob)
    calls.invite(alice, room)
    settings.CALL_RING_TIMEOUT_S = 0  # its ring time is over now

    with pytest.raises(calls.NoCall):
        calls.accept(bob, room)
    assert [(s["state"], s["reason"]) for s in states(calls.call_topic(room))] == [
        ("ringing", None),
        ("ended", "unanswered"),
    ]
    assert calls.current_state(alice, room) is None


def test_the_database_holds_one_live_call_per_room(alice):
    room = make_room("svc-call-unique", alice)
    Call.objects.create(room=room)
    with pytest.raises(IntegrityError), transaction.atomic():
        Call.objects.create(room=room, state=Call.State.ACTIVE)
    Call.objects.create(room=room, state=Call.State.ENDED)  # ended ones do not count


def test_a_non_member_can_neither_start_nor_join_nor_see_a_call(alice, bob, carol):
    room = make_room("svc-call-private", alice, bob)
    calls.invite(alice, room)

    for act in (calls.invite, calls.accept, calls.decline, calls.hangup, calls.current_state):
        with pytest.raises(services.NotAllowed):
            act(carol, room)
    with pytest.raises(services.NotAllowed):
        calls.relay(carol, room, "offer", {"to": alice.pk, "sdp": "v=0"})
    assert names(states(calls.call_topic(room))[-1]) == ["alice"]

    client = Client()
    client.force_login(carol)
    assert client.get(f"/chat/api/rooms/{room.slug}/call").status_code == 403
    client.force_login(bob)
    answer = client.get(f"/chat/api/rooms/{room.slug}/call").json()
    assert (answer["call"]["state"], names(answer["call"])) == ("ringing", ["alice"])


CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 10.0.0.7 54321 typ host", "sdpMid": "0"}


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"candidate": CANDIDATE, "candidates": [CANDIDATE]}, "not both"),
        ({}, "not neither"),
        ({"candidates": []}, "got 0 items"),
        ({"candidates": [CANDIDATE] * (calls.MAX_ICE_BATCH + 1)}, "got 33 items"),
        ({"candidates": CANDIDATE}, "got dict"),
        ({"candidates": [CANDIDATE, {"candidate": 5}]}, "field 'candidate' is invalid"),
        ({"candidates": [CANDIDATE, {"ip": "10.0.0.7"}]}, "must be null or {candidate"),
    ],
)
def test_a_bad_ice_batch_is_refused_saying_what_was_expected(alice, bob, data, says):
    room = services.direct_room(alice, bob)
    calls.invite(alice, room)
    calls.accept(bob, room)

    with pytest.raises(services.InvalidMessage, match=re.escape(says)):
        calls.relay(alice, room, "ice", {"to": bob.pk, **data})


async def test_a_socket_leaving_between_the_presence_check_and_the_join_takes_its_user_out(
    alice, bob, settings
):
    """The window in ``transport.call_publish``, opened at the join's first save.

    A post_save receiver makes alice's last (and only) socket leave the topic
    there, through ``ws.presence.leave`` on this test's loop: its
    ``presence_left`` hook runs to the end in another thread and connection,
    finds no participant (the join is not committed yet) and changes nothing,
    as it does when the socket of another server process closes at that moment.
    Only the presence check after the join can take her out again (at once: no
    grace period here).
    """
    settings.CALL_REJOIN_GRACE_S = 0
    room = await in_thread(services.direct_room, alice, bob)
    topic = calls.call_topic(room)
    conn = "test-call-window!alice"
    await presence.join(topic, conn, presence.member_for(alice, conn))
    loop = asyncio.get_running_loop()
    left: list[int] = []

    def leave_at_the_join(instance: CallParticipant, **kwargs: Any) -> None:
        if instance.user_id == alice.pk and not left:
            left.append(instance.pk)
            leaving = asyncio.run_coroutine_threadsafe(presence.leave(topic, conn), loop)
            leaving.result(timeout=FRAME_TIMEOUT_S)  # the hook included

    post_save.connect(leave_at_the_join, sender=CallParticipant, weak=False)
    try:
        seq = await in_thread(
            transport.call_publish, alice, topics.resolve(topic), {"type": "invite"}
        )
    finally:
        post_save.disconnect(leave_at_the_join, sender=CallParticipant)

    assert left, "the join saved no participant"
    assert seq == 1
    assert [
        (s["state"], s["event"], s["reason"], s["user"]["name"])
        for s in await in_thread(states, topic)
    ] == [
        ("ringing", "invite", None, "alice"),
        ("ended", "disconnect", "disconnected", "alice"),
    ]


# --- surviving the network: the grace period, rejoins, lost links, the renegotiation limit --


def statuses(state: Frame) -> dict[str, str]:
    return {member["name"]: member["status"] for member in state["participants"]}


def away_since(room: Any, user: Any) -> str:
    part = CallParticipant.objects.get(call__room=room, call__state__in=calls.LIVE, user=user)
    assert part.reconnecting_since is not None
    return part.reconnecting_since.isoformat()


def test_a_participant_whose_sockets_go_is_reconnecting_until_a_rejoin_or_the_grace_end(
    alice, bob, carol
):
    room = make_room("svc-call-grace", alice, bob, carol)
    topic = calls.call_topic(room)
    calls.invite(alice, room)
    calls.accept(bob, room)
    calls.accept(carol, room)

    calls.participant_gone(room.slug, bob.pk)
    assert calls.participant_gone(room.slug, bob.pk) is None  # reconnecting already
    away = states(topic)[-1]
    assert (away["state"], away["event"], away["user"]["name"]) == ("active", "reconnecting", "bob")
    assert statuses(away) == {"alice": "in_call", "bob": "reconnecting", "carol": "in_call"}

    # Bob's page came back holding its connection to alice: it offers to carol only.
    calls.rejoin(bob, room, [alice.pk])
    back = states(topic)[-1]
    assert (back["event"], back["user"]["name"], back["offer_to"]) == ("rejoin", "bob", [carol.pk])
    assert set(statuses(back).values()) == {"in_call"}
    assert calls.rejoin(bob, room, [alice.pk, carol.pk]) is None  # nothing to change

    # A grace period that ended after a rejoin changes nothing: bob is back.
    calls.participant_gone(room.slug, bob.pk)
    stale = away_since(room, bob)
    calls.rejoin(bob, room, [alice.pk, carol.pk])
    assert calls.grace_over(Call.objects.get().pk, bob.pk, stale) is None

    # Gone again, and the grace period ends: he leaves; the call goes on without him.
    calls.participant_gone(room.slug, bob.pk)
    call_id, since = Call.objects.get().pk, away_since(room, bob)
    seq = calls.grace_over(call_id, bob.pk, since)
    assert calls.grace_over(call_id, bob.pk, since) is None  # once only
    left = states(topic)[-1]
    assert (left["event"], left["user"]["name"], names(left)) == (
        "disconnect",
        "bob",
        ["alice", "carol"],
    )
    assert len(states(topic)) == seq
    with pytest.raises(services.NotAllowed, match="not in this room's call"):
        calls.rejoin(bob, room)  # too late: he must join again
    assert len(states(topic)) == seq  # the refusal pushed nothing


def test_a_reloaded_page_rejoins_offering_to_everyone_and_a_stranger_cannot(alice, bob, carol):
    room = services.direct_room(alice, bob)
    topic = calls.call_topic(room)
    calls.invite(alice, room)
    calls.accept(bob, room)
    calls.participant_gone(room.slug, alice.pk)

    calls.rejoin(alice, room, tab="page-2")  # a reload: no connection kept, a new page id
    back = states(topic)[-1]
    assert (back["state"], back["event"], back["offer_to"]) == ("active", "rejoin", [bob.pk])
    assert back["tab"] == "page-2"  # so that another page of alice's in the call steps aside

    before = len(states(topic))
    with pytest.raises(services.NotAllowed):
        calls.rejoin(carol, room)  # not a member of the direct room
    other = make_room("svc-call-stranger", alice, carol)
    calls.invite(alice, other)
    with pytest.raises(services.NotAllowed, match="not in this room's call"):
        calls.rejoin(carol, other)  # a member who never joined this call
    for keep in ("bob", [True], list(range(9))):
        with pytest.raises(services.InvalidMessage, match='"keep"'):
            calls.rejoin(alice, room, keep)
    for tab in ("", "a" * 65, "<script>", 7):
        with pytest.raises(services.InvalidMessage, match='"tab"'):
            calls.rejoin(alice, room, tab=tab)
        with pytest.raises(services.InvalidMessage, match='"tab"'):
            calls.relay(alice, room, "offer", {"to": bob.pk, "sdp": "v=0", "tab": tab})
    assert len(states(topic)) == before
    assert Call.objects.get(room=room).state == "active"


def test_a_lost_link_is_shown_to_everyone_until_one_of_the_two_renegotiates(alice, bob, carol):
    room = make_room("svc-call-lost", alice, bob, carol)
    topic = calls.call_topic(room)
    calls.invite(alice, room)
    calls.accept(bob, room)
    calls.accept(carol, room)

    calls.report_lost(carol, room, alice.pk)
    assert calls.report_lost(alice, room, carol.pk) is None  # the same pair, reported by both
    lost = states(topic)[-1]
    assert (lost["event"], lost["user"]["name"], lost["lost"]) == (
        "lost",
        "carol",
        [sorted([alice.pk, carol.pk])],
    )
    with pytest.raises(services.NotAllowed):
        calls.report_lost(carol, room, carol.pk)
    with pytest.raises(services.InvalidMessage, match='"peer"'):
        calls.report_lost(carol, room, "alice")

    calls.rejoin(bob, room, [alice.pk, carol.pk])  # bob renegotiates nothing: still lost
    assert states(topic)[-1]["lost"] == [sorted([alice.pk, carol.pk])]
    calls.rejoin(carol, room, [bob.pk])  # carol offers to alice again
    assert states(topic)[-1]["lost"] == []


def test_renegotiations_are_limited_per_user_and_call_and_the_call_goes_on(
    alice, bob, carol, settings
):
    settings.CALL_RENEGOTIATIONS = 3
    room = make_room("svc-call-restarts", alice, bob, carol)
    calls.invite(alice, room)
    calls.accept(bob, room)
    calls.accept(carol, room)
    offer = {"to": bob.pk, "sdp": "v=0"}

    for _ in range(2):
        calls.relay(alice, room, "offer", offer)
    calls.rejoin(alice, room)  # a rejoin counts as one
    with pytest.raises(services.RateLimited, match="too many renegotiations") as refused:
        calls.relay(alice, room, "offer", offer)
    assert refused.value.code == 4429
    assert 0 < refused.value.retry_after_s <= settings.CALL_RENEGOTIATION_WINDOW_S
    calls.relay(alice, room, "answer", offer)  # answers are not limited
    calls.relay(carol, room, "offer", offer)  # nor is anyone else
    assert Call.objects.get().state == "active"


def test_the_sweep_marks_the_unseen_reconnecting_and_ends_a_grace_whose_task_was_lost(
    alice, bob, settings
):
    settings.CALL_REJOIN_GRACE_S = 30
    room = services.direct_room(alice, bob)
    topic = calls.call_topic(room)
    calls.invite(alice, room)
    calls.accept(bob, room)  # neither has a socket on the topic (no presence at all)

    assert sweep_calls() == 2
    assert statuses(states(topic)[-1]) == {"alice": "reconnecting", "bob": "reconnecting"}
    assert sweep_calls() == 0  # their grace is not over
    past = timezone.now() - timedelta(seconds=31)
    CallParticipant.objects.update(reconnecting_since=past)  # as if its task never ran
    assert sweep_calls() == 1  # alice leaves, which ends the call (bob's turn finds it over)
    ended = states(topic)[-1]
    assert (ended["state"], ended["reason"]) == ("ended", "disconnected")


# --- ICE servers ---------------------------------------------------------------------------


def test_turn_credentials_are_the_hmac_of_a_username_that_expires_after_the_ttl(alice, settings):
    settings.CALL_ICE_SERVERS = ["stun:stun.example.com:3478"]
    settings.CALL_TURN_URLS = ["turn:turn.example.com:3478?transport=udp"]
    settings.CALL_TURN_SECRET = "s3cret"
    settings.CALL_TURN_TTL_S = 600
    client = Client()
    client.force_login(alice)

    before = int(time.time())
    response = client.get("/chat/api/calls/ice-servers")
    after = int(time.time())

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    stun, turn = body["iceServers"]
    assert stun == {"urls": ["stun:stun.example.com:3478"]}
    assert turn["urls"] == ["turn:turn.example.com:3478?transport=udp"]
    expiry, user_id = turn["username"].split(":")
    assert user_id == str(alice.pk)
    assert before + 600 <= int(expiry) <= after + 600
    assert body["expires_at"] == int(expiry)
    assert body["expires_in"] == 600
    expected = hmac.new(b"s3cret", turn["username"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(turn["credential"]) == expected

    settings.CALL_TURN_SECRET = ""  # no secret: no TURN entry, and nothing expires
    assert client.get("/chat/api/calls/ice-servers").json() == {
        "iceServers": [{"urls": ["stun:stun.example.com:3478"]}],
        "iceTransportPolicy": "all",
        "expires_at": None,
        "expires_in": None,
    }
    assert Client().get("/chat/api/calls/ice-servers").status_code == 401


def test_stun_defaults_to_the_turn_hosts_and_the_transport_policy_reaches_the_page(alice, settings):
    settings.CALL_ICE_SERVERS = []
    settings.CALL_TURN_URLS = [
        "turn:turn.example.com:3478?transport=udp",
        "turn:turn.example.com:3478?transport=tcp",
        "turns:turn.example.com:5349",
    ]
    settings.CALL_TURN_SECRET = "s3cret"
    settings.CALL_ICE_TRANSPORT_POLICY = "relay"
    client = Client()
    client.force_login(alice)

    body = client.get("/chat/api/calls/ice-servers").json()
    assert body["iceServers"][0] == {"urls": ["stun:turn.example.com:3478"]}
    assert body["iceServers"][1]["urls"] == settings.CALL_TURN_URLS
    assert body["iceTransportPolicy"] == "relay"
    page = client.get("/chat/")
    assert page.context["page_config"]["iceTransportPolicy"] == "relay"


def test_a_turn_credential_is_fixed_by_its_time_and_user(settings):
    from chat.ice import turn_credential

    settings.CALL_TURN_SECRET = "another"
    settings.CALL_TURN_TTL_S = 60
    username, credential, expires = turn_credential(7, now=1_700_000_000.5)
    assert (username, expires) == ("1700000060:7", 1_700_000_060)
    digest = hmac.new(b"another", b"1700000060:7", hashlib.sha1).digest()
    assert credential == base64.b64encode(digest).decode()


# --- over sockets --------------------------------------------------------------------------


@pytest.fixture
def ring_server(server_factory):
    """A second daphne process, whose calls ring for 3 s only."""
    return server_factory.start("daphne", CALL_RING_TIMEOUT_S="3")


class Peer:
    """One user's socket on a room's call topic (and their ``user.<id>``), keeping every frame."""

    def __init__(self, socket: ClientConnection, user: Any, topic: str) -> None:
        self.socket, self.user, self.topic = socket, user, topic
        self.seen: list[Frame] = []  # every frame received, in order
        self._taken: set[int] = set()  # those already handed out by ``next``

    @classmethod
    async def join(cls, server: DaphneServer, user: Any, topic: str) -> Peer:
        cookie = await in_thread(session_cookie, user)
        socket = await open_socket(
            server.ws_url("/ws/"), server.origin, additional_headers={"Cookie": cookie}
        )
        assert (await subscribe(socket, f"user.{user.pk}"))["op"] == "subscribed"
        assert (await subscribe(socket, topic))["op"] == "subscribed"
        return cls(socket, user, topic)

    async def next(
        self, predicate: Callable[[Frame], bool], timeout: float = FRAME_TIMEOUT_S
    ) -> Frame:
        """The first frame not handed out yet that satisfies ``predicate``, reading as needed."""
        scanned = 0
        async with asyncio.timeout(timeout):
            while True:
                for index in range(scanned, len(self.seen)):
                    if index not in self._taken and predicate(self.seen[index]):
                        self._taken.add(index)
                        return self.seen[index]
                scanned = len(self.seen)
                self.seen.append(json.loads(await self.socket.recv()))

    async def publish(self, data: Frame) -> Frame:
        await self.socket.send(json.dumps({"op": "publish", "topic": self.topic, "data": data}))
        return await self.next(
            lambda f: f.get("topic") == self.topic and f.get("op") in ("published", "error")
        )

    async def state(self, seq: int, timeout: float = FRAME_TIMEOUT_S) -> Frame:
        """The ``call.state`` data pushed as ``seq``."""
        frame = await self.next(
            lambda f: f.get("op") == "message" and f["topic"] == self.topic and f["seq"] == seq,
            timeout,
        )
        assert frame["msg"] == "call.state"
        return frame["data"]

    async def relayed(self, kind: str) -> Frame:
        """The next offer, answer, ICE candidate or ring sent to this user."""
        frame = await self.next(
            lambda f: (
                f.get("op") == "ephemeral"
                and f["topic"] == f"user.{self.user.pk}"
                and f["data"]["type"] == kind
            )
        )
        return frame["data"]

    def all_relayed(self) -> list[Frame]:
        return [
            f["data"]
            for f in self.seen
            if f.get("op") == "ephemeral" and f["data"]["type"] in calls.RELAYED
        ]


async def test_a_call_over_sockets_rings_connects_and_relays_to_the_addressed_peer_only(
    daphne_server, alice, bob, carol
):
    room = await in_thread(make_room, "e2e-call", alice, bob, carol)
    topic = "call.e2e-call"
    a, b, c = [await Peer.join(daphne_server, user, topic) for user in (alice, bob, carol)]
    me = {user.username: {"id": user.pk, "name": user.username} for user in (alice, bob, carol)}

    invited = await a.publish({"type": "invite"})
    ringing = await c.state(invited["seq"])
    assert (ringing["state"], names(ringing), ringing["room"]) == ("ringing", ["alice"], room.slug)
    for callee in (b, c):
        ring = await callee.relayed("ring")
        assert ring == {
            "type": "ring",
            "call": ringing["call"],
            "room": room.slug,
            "room_title": str(room),
            "direct": False,
            "from": me["alice"],
        }

    accepted = await b.publish({"type": "accept"})
    joined = await c.publish({"type": "accept"})
    for peer in (a, b, c):
        active = await peer.state(accepted["seq"])
        assert (active["state"], active["user"], active["offer_to"]) == (
            "active",
            me["bob"],
            [alice.pk],
        )
        grown = await peer.state(joined["seq"])
        assert (names(grown), grown["offer_to"]) == (["alice", "bob", "carol"], [alice.pk, bob.pk])
    # Those who answered no longer ring, on any page of theirs.
    for callee in (b, c):
        ended = await callee.relayed("ring_end")
        assert (ended["call"], ended["reason"]) == (ringing["call"], "answered")

    # Mute is part of the state; a flag that is not a boolean is refused, the socket stays.
    muted = await b.publish({"type": "mute", "muted": True})
    for peer in (a, b, c):
        shown = await peer.state(muted["seq"])
        assert [(p["name"], p["muted"]) for p in shown["participants"]] == [
            ("alice", False),
            ("bob", True),
            ("carol", False),
        ]
    refused = await b.publish({"type": "mute", "muted": "yes"})
    assert (refused["op"], refused["code"]) == ("error", 4400)
    unmuted = await b.publish({"type": "mute", "muted": False})
    assert unmuted["op"] == "published"
    assert [p["muted"] for p in (await a.state(unmuted["seq"]))["participants"]] == [False] * 3

    # The newcomers offer as told; answers and candidates go back to the offerer.
    for sender, data in (
        (b, {"type": "offer", "to": alice.pk, "sdp": "v=0 bob->alice", "tab": "bob-page"}),
        (c, {"type": "offer", "to": alice.pk, "sdp": "v=0 carol->alice"}),
        (c, {"type": "offer", "to": bob.pk, "sdp": "v=0 carol->bob"}),
        (a, {"type": "answer", "to": bob.pk, "sdp": "v=0 alice->bob"}),
        (b, {"type": "ice", "to": carol.pk, "candidate": {"candidate": "c1", "sdpMid": "0"}}),
        (a, {"type": "ice", "to": bob.pk, "candidate": None}),
    ):
        answer = await sender.publish(data)
        assert answer == {"op": "published", "topic": topic}  # not numbered, not kept
    refused = await b.publish({"type": "offer", "to": bob.pk, "sdp": "v=0"})
    assert (refused["op"], refused["code"]) == ("error", 4003)  # not to oneself
    refused = await b.publish({"type": "offer", "to": alice.pk})
    assert (refused["op"], refused["code"]) == ("error", 4400)  # no sdp

    hung_up = await a.publish({"type": "hangup"})  # a marker after every relay
    for peer in (a, b, c):
        after = await peer.state(hung_up["seq"])
        assert (after["state"], names(after)) == ("active", ["bob", "carol"])
    got = {peer.user.username: peer.all_relayed() for peer in (a, b, c)}
    call_id = ringing["call"]
    base = {"call": call_id, "room": room.slug, "tab": None}
    assert got == {
        "alice": [
            {
                **base,
                "type": "offer",
                "from": me["bob"],
                "sdp": "v=0 bob->alice",
                "tab": "bob-page",
            },
            {**base, "type": "offer", "from": me["carol"], "sdp": "v=0 carol->alice"},
        ],
        "bob": [
            {**base, "type": "offer", "from": me["carol"], "sdp": "v=0 carol->bob"},
            {**base, "type": "answer", "from": me["alice"], "sdp": "v=0 alice->bob"},
            {**base, "type": "ice", "from": me["alice"], "candidate": None},
        ],
        "carol": [
            {
                **base,
                "type": "ice",
                "from": me["bob"],
                "candidate": {"candidate": "c1", "sdpMid": "0"},
            },
        ],
    }
    refused = await b.publish({"type": "offer", "to": alice.pk, "sdp": "v=0"})
    assert (refused["op"], refused["code"]) == ("error", 4003)  # alice has left the call

    # End the call before the test does: the sockets' closes then find no call to
    # leave, and the server touches no row while the test database is emptied.
    last = await b.publish({"type": "hangup"})
    assert (await c.state(last["seq"]))["state"] == "ended"


async def test_a_non_member_can_neither_subscribe_to_nor_publish_on_nor_join_a_call(
    daphne_server, alice, bob, carol
):
    await in_thread(make_room, "e2e-call-private", alice, bob)
    topic = "call.e2e-call-private"
    a = await Peer.join(daphne_server, alice, topic)
    invited = await a.publish({"type": "invite"})
    cookie = await in_thread(session_cookie, carol)
    intruder = await open_socket(
        daphne_server.ws_url("/ws/"), daphne_server.origin, additional_headers={"Cookie": cookie}
    )

    assert (await subscribe(intruder, topic))["code"] == 4003
    assert (await subscribe(intruder, "call.e2e-no-such-room"))["code"] == 4003
    outsider = Peer(intruder, carol, topic)
    for data in (
        {"type": "invite"},
        {"type": "accept"},
        {"type": "hangup"},
        {"type": "offer", "to": alice.pk, "sdp": "v=0"},
    ):
        refused = await outsider.publish(data)
        assert (refused["op"], refused["code"]) == ("error", 4003)
    assert not [f for f in outsider.seen if f.get("op") in ("message", "ephemeral", "presence")]

    # A member must be on the topic to join: the call follows that socket's presence.
    cookie = await in_thread(session_cookie, bob)
    unsubscribed = await open_socket(
        daphne_server.ws_url("/ws/"), daphne_server.origin, additional_headers={"Cookie": cookie}
    )
    refused = await Peer(unsubscribed, bob, topic).publish({"type": "accept"})
    assert (refused["op"], refused["code"]) == ("error", 4400)
    assert "subscribe to" in refused["msg"]

    def participants() -> list[str]:
        call = Call.objects.get(room__slug="e2e-call-private")
        return [p.user.username for p in call.participants.select_related("user")]

    assert await in_thread(participants) == ["alice"]
    assert (await a.state(invited["seq"]))["state"] == "ringing"


async def test_a_participant_whose_last_socket_closes_is_reconnecting_then_back_or_out(
    daphne_server, celery_worker, redis_client, alice, bob, carol
):
    """Over a real server and worker, with the session's grace period (``CALL_REJOIN_GRACE_S``)."""
    await in_thread(make_room, "e2e-call-gone", alice, bob, carol)
    topic = "call.e2e-call-gone"
    a = await Peer.join(daphne_server, alice, topic)
    b1 = await Peer.join(daphne_server, bob, topic)
    b2 = await Peer.join(daphne_server, bob, topic)  # bob's second tab
    c = await Peer.join(daphne_server, carol, topic)
    await a.publish({"type": "invite"})
    await b1.publish({"type": "accept"})
    joined = await c.publish({"type": "accept"})
    await a.state(joined["seq"])

    def event(name: str) -> Callable[[Frame], bool]:
        return lambda f: is_state(f, topic) and f["data"]["event"] == name

    await c.socket.close()  # carol's only socket: she is reconnecting, still in the call
    away = (await a.next(event("reconnecting")))["data"]
    assert (away["state"], away["user"]["name"], statuses(away)["carol"]) == (
        "active",
        "carol",
        "reconnecting",
    )
    c = await Peer.join(daphne_server, carol, topic)  # her page is back
    rejoined = await c.publish({"type": "rejoin", "keep": [alice.pk, bob.pk]})
    back = await a.state(rejoined["seq"])
    assert (back["event"], back["offer_to"], statuses(back)["carol"]) == ("rejoin", [], "in_call")

    await b2.socket.close()  # bob still has a socket: still in, not even reconnecting
    count_key = keys.topic(topic).presence.count
    await in_thread(
        poll_until,
        lambda: redis_client.hget(count_key, f"user:{bob.pk}") == b"1",
        10,
        "bob's second socket leaving",
    )
    await b1.socket.close()  # bob's last socket, and he never comes back
    gone = await a.next(event("reconnecting"))
    assert gone["seq"] == rejoined["seq"] + 1  # nothing in between: the second tab changed nothing
    left = await a.next(event("disconnect"), timeout=FRAME_TIMEOUT_S + 6)
    assert (left["data"]["state"], left["data"]["user"]["name"], names(left["data"])) == (
        "active",
        "bob",
        ["alice", "carol"],
    )

    def live() -> tuple[str, list[str]]:
        call = Call.objects.get(room__slug="e2e-call-gone")
        in_call = call.participants.filter(left_at__isnull=True).select_related("user")
        return call.state, sorted(p.user.username for p in in_call)

    await in_thread(
        poll_until, lambda: live() == ("active", ["alice", "carol"]), 10, "bob's leave committed"
    )
    await c.socket.close()  # fewer than two once her grace ends: the call ends
    ended = await a.next(lambda f: is_state(f, topic) and f["data"]["state"] == "ended", 20)
    assert (ended["data"]["reason"], ended["data"]["user"]["name"]) == ("disconnected", "carol")
    # The change is pushed under the room's lock, just before its transaction commits.
    await in_thread(poll_until, lambda: live()[0] == "ended", 10, "the call's end committed")


async def test_a_refused_rejoin_is_an_error_frame_and_the_call_goes_on(
    daphne_server, alice, bob, carol
):
    await in_thread(make_room, "e2e-call-refused", alice, bob, carol)
    topic = "call.e2e-call-refused"
    a, b, c = [await Peer.join(daphne_server, user, topic) for user in (alice, bob, carol)]
    await a.publish({"type": "invite"})
    answered = await b.publish({"type": "accept"})

    refused = await c.publish({"type": "rejoin"})  # carol never joined
    assert (refused["op"], refused["code"]) == ("error", 4003)
    assert "not in this room's call" in refused["msg"]
    bad = await a.publish({"type": "rejoin", "keep": "everyone"})
    assert (bad["op"], bad["code"]) == ("error", 4400)
    lost = await c.publish({"type": "lost", "peer": alice.pk})
    assert (lost["op"], lost["code"]) == ("error", 4003)
    # Nothing was pushed, and the call carries on: the next change is the next seq.
    hung_up = await b.publish({"type": "hangup"})
    assert hung_up["seq"] == answered["seq"] + 1
    assert (await c.state(hung_up["seq"]))["state"] == "ended"


async def test_an_unanswered_call_ends_after_the_ring_timeout(
    ring_server, celery_worker, alice, bob
):
    from chat.services import direct_room

    room = await in_thread(direct_room, alice, bob)
    topic = f"call.{room.slug}"
    a = await Peer.join(ring_server, alice, topic)
    b = await Peer.join(ring_server, bob, topic)

    invited = await a.publish({"type": "invite"})
    rang_at = time.monotonic()
    assert (await b.relayed("ring"))["from"]["name"] == "alice"
    ended = await b.state(invited["seq"] + 1, timeout=30)  # nobody acts: the worker ends it
    waited = time.monotonic() - rang_at

    assert (ended["state"], ended["event"], ended["reason"], ended["participants"]) == (
        "ended",
        "timeout",
        "unanswered",
        [],
    )
    assert waited >= 2.5  # CALL_RING_TIMEOUT_S=3 on this server, not at once
    refused = await b.publish({"type": "accept"})
    assert (refused["op"], refused["code"]) == ("error", 4400)  # too late: no call to accept
    assert await in_thread(partial(Call.objects.filter(room=room, state="ended").count)) == 1


async def test_two_users_calling_each_other_at_the_same_moment_end_up_in_one_call(
    daphne_server, ring_server, alice, bob
):
    from chat.services import direct_room

    room = await in_thread(direct_room, alice, bob)
    topic = f"call.{room.slug}"
    a = await Peer.join(daphne_server, alice, topic)  # two server processes, one database
    b = await Peer.join(ring_server, bob, topic)

    def live_calls() -> list[tuple[str, list[str]]]:
        return [
            (
                call.state,
                sorted(
                    p.user.username
                    for p in call.participants.filter(left_at__isnull=True).select_related("user")
                ),
            )
            for call in Call.objects.filter(room=room, state__in=["ringing", "active"])
        ]

    for _ in range(5):
        answers = await asyncio.gather(a.publish({"type": "invite"}), b.publish({"type": "invite"}))
        assert [answer["op"] for answer in answers] == ["published", "published"]
        first, second = sorted(answer["seq"] for answer in answers)
        assert second == first + 1
        ringing, active = await a.state(first), await a.state(second)
        assert ringing["state"] == "ringing"
        assert active["state"] == "active"
        assert active["call"] == ringing["call"]  # one call, not two
        # The second to arrive answered the first's call and offers to them alone.
        assert active["offer_to"] == [ringing["user"]["id"]] != [active["user"]["id"]]
        assert sorted(names(active)) == ["alice", "bob"]
        assert await in_thread(live_calls) == [("active", ["alice", "bob"])]

        hung_up = await b.publish({"type": "hangup"})
        assert (await a.state(hung_up["seq"]))["reason"] == "hung_up"
    assert await in_thread(partial(Call.objects.filter(room=room).count)) == 5


async def test_a_batch_of_ice_candidates_reaches_the_addressed_peer_only_and_bad_ones_are_refused(
    daphne_server, alice, bob, carol
):
    await in_thread(make_room, "e2e-call-ice", alice, bob, carol)
    topic = "call.e2e-call-ice"
    a, b, c = [await Peer.join(daphne_server, user, topic) for user in (alice, bob, carol)]
    await a.publish({"type": "invite"})
    await b.publish({"type": "accept"})
    joined = await c.publish({"type": "accept"})
    call_id = (await c.state(joined["seq"]))["call"]

    batch = [
        CANDIDATE,
        {"candidate": "candidate:2 1 udp 1686052607 203.0.113.9 61000 typ srflx", "sdpMid": "0",
         "sdpMLineIndex": 0, "usernameFragment": "ufrag"},
        None,
    ]  # fmt: skip
    sent = await c.publish({"type": "ice", "to": bob.pk, "candidates": batch})
    assert sent == {"op": "published", "topic": topic}

    for data, says in (
        ({"candidate": None, "candidates": [None]}, "not both"),
        ({}, "not neither"),
        ({"candidates": []}, "got 0 items"),
        ({"candidates": [None] * 33}, "got 33 items"),
        ({"candidates": [CANDIDATE, {"sdpMLineIndex": "0"}]}, "'sdpMLineIndex' is invalid"),
    ):
        refused = await c.publish({"type": "ice", "to": alice.pk, **data})
        assert (refused["op"], refused["code"]) == ("error", 4400)
        assert says in refused["msg"]
    # The socket keeps working: the single form, then a full batch.
    full = [CANDIDATE] * calls.MAX_ICE_BATCH
    for data in ({"candidate": None}, {"candidates": full}):
        answer = await c.publish({"type": "ice", "to": alice.pk, **data})
        assert answer == {"op": "published", "topic": topic}

    hung_up = await c.publish({"type": "hangup"})  # a marker after every relay
    for peer in (a, b, c):
        await peer.state(hung_up["seq"])
    got = {peer.user.username: peer.all_relayed() for peer in (a, b, c)}
    base = {"call": call_id, "room": "e2e-call-ice", "tab": None}
    carol_is = {"id": carol.pk, "name": "carol"}
    assert got == {
        "alice": [
            {**base, "type": "ice", "from": carol_is, "candidate": None},
            {**base, "type": "ice", "from": carol_is, "candidates": full},
        ],
        "bob": [{**base, "type": "ice", "from": carol_is, "candidates": batch}],
        "carol": [],
    }

    last = await b.publish({"type": "hangup"})  # the call ends before the test does
    assert (await a.state(last["seq"]))["state"] == "ended"


@pytest.fixture
def doomed_server(child_env, log_dir):
    """A daphne for a test to kill, whose presence entries go stale 4 s after it dies."""
    stale_soon = {"PUSH_PRESENCE_TTL_S": "4", "PUSH_PRESENCE_REFRESH_S": "1"}
    with server_with_settings(child_env, log_dir, "daphne-calls-doomed", **stale_soon) as server:
        yield server


async def test_the_sweep_ends_calls_whose_server_died_and_leaves_the_others_alone(
    daphne_server, doomed_server, redis_client, alice, bob, carol, settings
):
    settings.CALL_REJOIN_GRACE_S = 0  # the sweep's own run takes them out (grace: below)
    for slug in ("e2e-sweep-dead", "e2e-sweep-ringing", "e2e-sweep-alive"):
        await in_thread(make_room, slug, alice, bob, carol)
    dead, ringing, alive = "call.e2e-sweep-dead", "call.e2e-sweep-ringing", "call.e2e-sweep-alive"
    # An active call and a ringing one whose every socket is on the doomed server...
    a, b = [await Peer.join(doomed_server, user, dead) for user in (alice, bob)]
    await a.publish({"type": "invite"})
    await b.state((await b.publish({"type": "accept"}))["seq"])
    caller = await Peer.join(doomed_server, carol, ringing)
    await caller.publish({"type": "invite"})
    # ...and one on a live server.
    a2, c2 = [await Peer.join(daphne_server, user, alive) for user in (alice, carol)]
    await a2.publish({"type": "invite"})
    await a2.state((await c2.publish({"type": "accept"}))["seq"])

    doomed_server.stop(signal.SIGKILL)  # no close, no presence leave: its entries stay

    def stale(topic: str) -> bool:
        seconds, micros = redis_client.time()
        expiries = redis_client.zrange(keys.topic(topic).presence.conns, 0, -1, withscores=True)
        return all(expiry <= seconds * 1000 + micros // 1000 for _, expiry in expiries)

    for topic in (dead, ringing):
        await in_thread(poll_until, partial(stale, topic), 15, f"stale entries on {topic}")
    # Not swept (no live process holds the topic): presence still counts them...
    assert await in_thread(presence.is_present, dead, f"user:{alice.pk}")
    # ...but the sweep does not.
    assert await in_thread(sweep_calls) == 2  # alice (which ends that call) and carol

    def live_calls() -> dict[str, tuple[str, str, list[str]]]:
        return {
            call.room.slug: (
                call.state,
                call.end_reason,
                sorted(p.user.username for p in call.participants.filter(left_at__isnull=True)),
            )
            for call in Call.objects.select_related("room")
        }

    assert await in_thread(live_calls) == {
        "e2e-sweep-dead": ("ended", "disconnected", []),
        "e2e-sweep-ringing": ("ended", "disconnected", []),
        "e2e-sweep-alive": ("active", "", ["alice", "carol"]),
    }
    assert [(s["state"], s["event"]) for s in await in_thread(states, dead)][-1] == (
        "ended",
        "disconnect",
    )
    assert await in_thread(sweep_calls) == 0  # a re-run changes nothing

    last = await c2.publish({"type": "hangup"})  # the call ends before the test does
    assert (await a2.state(last["seq"]))["state"] == "ended"
