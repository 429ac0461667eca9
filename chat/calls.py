"""Voice calls: one live call per room, its state machine, and who offers to whom.

A call belongs to a chat room and is for those who may read it (a direct
room's two users make a one-to-one call), at most ``CALL_MAX_PARTICIPANTS`` at
once. Its state is in the database (``Call``, ``CallParticipant``): shared by
every server process and worker, and kept across restarts. Each change locks
the room's row (PostgreSQL's ``SELECT … FOR UPDATE``; on SQLite the write lock
taken at ``BEGIN IMMEDIATE``), so changes to one room's call happen one at a
time, and is pushed to ``call.<room>`` before that lock is let go: the topic's
``seq`` order is the order of the changes, and a push that fails rolls the
change back.

    ringing ──accept, or an invite by someone else──▶ active ──▶ ended
    (fewer than two left in an active call: hang-up or last socket gone)
    ringing ──cancel, all declined, no answer, the caller gone──▶ ended

Two invites at the same moment meet in one call: the second finds the first's
call under the lock and joins it. Whoever joins offers to everyone already in
the call (the state push names them in ``offer_to``); joins are one at a time,
so two peers never offer to each other at once. Offers, answers and ICE
candidates go to the addressed participant's ``user.<id>`` topic as ephemeral
events: only that user's sockets get them (the other participants and the
room's listeners never see an SDP), and nothing is stored or replayed. ICE
candidates come one at a time (``"candidate"``) or in a batch of 1 to
``MAX_ICE_BATCH`` (``"candidates"``): a socket's publishes are rate-limited,
and a newcomer to a full mesh has offers and candidates for every peer to send.

Surviving the network. A participant whose last socket on the topic goes
(``participant_gone``, from the presence hook, or when a live server process
sweeps the entries of a dead one) is not taken out at once: they are
``reconnecting`` for ``CALL_REJOIN_GRACE_S`` (their peer connections may
still carry audio), and a ``chat.tasks.end_rejoin_grace`` task scheduled for
the end of it takes them out if they are still away. A page of theirs that
subscribes again publishes ``rejoin`` with the peers whose connection it still
holds (``keep``): they are back in the call, and the state push names the
others in ``offer_to``, so the rejoining page offers to exactly those whose
connection is gone (all of them after a reload) and they close theirs and wait
for its offer. If no live process holds the topic (every one that did died),
no one sweeps it: ``sweep_gone``, run by a periodic task, marks those with no
live socket as reconnecting and takes out those whose grace is over.

Renegotiation (ICE restarts, a rejoin's offers) follows the perfect-negotiation
pattern on the pages: ``participants`` are listed in the order they joined,
and of two participants the one who joined later is the polite one (it rolls
back its own offer when both offer at once). Offers and rejoins are limited to
``CALL_RENEGOTIATIONS`` per user and call in ``CALL_RENEGOTIATION_WINDOW_S``.
A page that gives up on a peer connection (``CALL_PEER_GIVE_UP_S``) reports
it (``lost``): the pair is in the state's ``lost`` list for every page to
show, until one of the two renegotiates with the other or leaves.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chat import ratelimit
from chat.models import Call, CallParticipant, Message, Room, RoomReader, user_data
from chat.services import (
    ChatError,
    InvalidMessage,
    NotAllowed,
    RateLimited,
    check_reader,
    check_user_ids,
    post_note,
    user_by_id,
)
from ws import presence
from ws.protocol import CloseCode
from ws.push import ephemeral, push

__all__ = [
    "CallFull",
    "NoCall",
    "accept",
    "call_topic",
    "cancel",
    "check_tab",
    "current_state",
    "decline",
    "end_unanswered",
    "grace_over",
    "hangup",
    "invite",
    "missed_calls",
    "participant_gone",
    "rejoin",
    "relay",
    "report_lost",
    "ring_targets",
    "ringing_calls",
    "set_muted",
    "sweep_gone",
]

logger = logging.getLogger("chat")

STATE_MSG = "call.state"
LIVE = (Call.State.RINGING, Call.State.ACTIVE)
# A ringing call that ended for these reasons was missed by those it rang.
MISSED_REASONS = ("unanswered", "cancelled", "disconnected")
RELAYED = ("offer", "answer", "ice")
# Far above any real SDP; a socket's frame is at most PUSH_MAX_FRAME_BYTES anyway.
MAX_SDP_CHARS = 60_000
# Candidates in one batched ``ice`` publish: a browser gathers a handful per peer.
MAX_ICE_BATCH = 32
_TAB = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CANDIDATE_FIELDS = {"candidate": str, "sdpMid": str, "sdpMLineIndex": int, "usernameFragment": str}


class NoCall(ChatError):
    """No live call to act on in the room, or the user is not in it."""

    code = CloseCode.MALFORMED
    status = 409


class CallFull(ChatError):
    """The call already has ``CALL_MAX_PARTICIPANTS`` participants."""

    code = CloseCode.FORBIDDEN
    status = 409


def call_topic(room: Room) -> str:
    """The signalling topic of ``room``'s calls."""
    return f"call.{room.slug}"


def _in_call(call: Call) -> list[CallParticipant]:
    """Who is in the call now, in the order they joined."""
    return list(
        call.participants.filter(joined_at__isnull=False, left_at__isnull=True)
        .select_related("user")
        .order_by("joined_at", "id")
    )


def _participant_data(part: CallParticipant) -> dict[str, Any]:
    status = "in_call" if part.reconnecting_since is None else "reconnecting"
    return {**user_data(part.user), "status": status, "muted": part.muted}


def state_data(
    call: Call,
    *,
    event: str,
    user: Any = None,
    offer_to: Iterable[int] = (),
    tab: str | None = None,
) -> dict[str, Any]:
    """The ``call.state`` message: where the call is, who is in it, what just happened.

    ``participants`` (in the order they joined, each ``in_call`` or
    ``reconnecting``, and ``muted`` or not), ``lost`` (pairs of user ids whose connection was given
    up on) and, on a join or rejoin, ``offer_to``: ``user`` offers to each of
    these, who close any connection to ``user`` they hold and wait for its offer.
    ``tab``: which page of ``user`` joined or rejoined (its own random id), so
    another page of theirs in the call knows it was replaced.
    """
    return {
        "type": "state",
        "call": call.pk,
        "room": call.room.slug,
        "state": call.state,
        "participants": [_participant_data(part) for part in _in_call(call)],
        "lost": [list(pair) for pair in call.lost_links],
        "reason": call.end_reason or None,
        "event": event,
        "user": None if user is None else user_data(user),
        "offer_to": list(offer_to),
        "tab": tab,
    }


def _push_state(call: Call, **what: Any) -> int:
    return push(call_topic(call.room), state_data(call, **what), msg=STATE_MSG)


def _ring_expired(call: Call) -> bool:
    limit = timedelta(seconds=settings.CALL_RING_TIMEOUT_S)
    return call.state == Call.State.RINGING and timezone.now() - call.created_at >= limit


@contextmanager
def _room_locked(room: Room) -> Iterator[Call | None]:
    """The room's live call, with the room's row locked until the transaction ends.

    A ringing call past its timeout whose task has not run yet (no worker, say)
    is ended here first, in a transaction of its own (what the caller does next
    may be refused), so nobody joins a call that should have stopped ringing.
    """
    with transaction.atomic():
        call = _lock(room)
        if call is None or not _ring_expired(call):
            yield call
            return
        _end(call, "unanswered", event="timeout")
    with transaction.atomic():
        yield _lock(room)


def _lock(room: Room) -> Call | None:
    """Lock the room's row (until the transaction ends); its live call."""
    list(Room.objects.select_for_update().filter(pk=room.pk).values_list("pk", flat=True))
    return Call.objects.filter(room=room, state__in=LIVE).select_related("room").first()


def _participant(call: Call, user: Any) -> CallParticipant | None:
    return call.participants.filter(user=user).first()


def _is_in(call: Call, user: Any) -> bool:
    part = _participant(call, user)
    return part is not None and part.in_call


def _end(call: Call, reason: str, *, event: str, user: Any = None) -> int:
    was_ringing = call.state == Call.State.RINGING
    now = timezone.now()
    call.participants.filter(joined_at__isnull=False, left_at__isnull=True).update(
        left_at=now, reconnecting_since=None
    )
    call.state, call.ended_at, call.end_reason = Call.State.ENDED, now, reason
    call.lost_links = []
    call.save(update_fields=["state", "ended_at", "end_reason", "lost_links"])
    if was_ringing:
        _stop_ringing(call, reason, ring_targets(call.room, call.started_by_id))
        if reason in MISSED_REASONS:
            _leave_missed_call_note(call)
    return _push_state(call, event=event, user=user)


def ring_targets(room: Room, caller_id: int | None) -> list[int]:
    """Whom a call in ``room`` rings: a members-only or direct room's members, an open
    room's readers who asked for it (``RoomReader.ring``); never the caller."""
    if room.open_to_signed_in:
        found = RoomReader.objects.filter(room=room, ring=True).values_list("user_id", flat=True)
    else:
        found = room.members.values_list("pk", flat=True)
    return sorted(set(found) - {caller_id})


def _stop_ringing(call: Call, reason: str, user_ids: Iterable[int]) -> None:
    """After commit, take the ring of ``call`` off the pages of ``user_ids``."""
    stop = {"type": "ring_end", "call": call.pk, "room": call.room.slug, "reason": reason}
    targets = list(user_ids)

    def send() -> None:
        for user_id in targets:
            ephemeral(f"user.{user_id}", stop)

    transaction.on_commit(send, robust=True)


def _leave_missed_call_note(call: Call) -> None:
    """A ringing call ended unanswered: say so in the conversation (a message row)."""
    caller = call.started_by
    name = caller.get_username() if caller is not None else "someone"
    post_note(
        call.room, caller, f"Missed call from {name}", kind=Message.Kind.MISSED_CALL, call=call
    )


def _forget_lost_links(call: Call, user_id: int, peers: Iterable[int] | None = None) -> None:
    """Drop the lost pairs of ``user_id`` (with ``peers`` only, when given); saved."""
    others = None if peers is None else set(peers)
    kept = [
        pair
        for pair in call.lost_links
        if user_id not in pair or (others is not None and not others & set(pair))
    ]
    if kept != call.lost_links:
        call.lost_links = kept
        call.save(update_fields=["lost_links"])


def _join(call: Call, user: Any, *, event: str, tab: str | None) -> int:
    """Put ``user`` in the call (it turns active at its second participant) and say so."""
    already = _in_call(call)
    if len(already) >= settings.CALL_MAX_PARTICIPANTS:
        raise CallFull(f"the call is full ({settings.CALL_MAX_PARTICIPANTS} participants)")
    part, _ = CallParticipant.objects.get_or_create(call=call, user=user)
    part.joined_at, part.left_at, part.declined_at = timezone.now(), None, None
    part.reconnecting_since, part.muted = None, False
    part.save()
    answered_for = {user.pk}  # in the call now: no page of theirs rings for it
    if call.state == Call.State.RINGING and already:
        call.state, call.answered_at = Call.State.ACTIVE, timezone.now()
        call.save(update_fields=["state", "answered_at"])
        # One-to-one: answered, it rings nobody now. A group call rings the others on
        # (they may still join) until its ring would have timed out on their pages.
        if call.room.is_direct:
            answered_for.update(ring_targets(call.room, call.started_by_id))
    _stop_ringing(call, "answered", answered_for)
    offer_to = [p.user_id for p in already]
    return _push_state(call, event=event, user=user, offer_to=offer_to, tab=tab)


def check_tab(tab: Any) -> str | None:
    """A page's id as sent with a join, rejoin or relayed message: None or 1-64 of [A-Za-z0-9_-]."""
    if tab is None or (isinstance(tab, str) and _TAB.fullmatch(tab)):
        return tab
    raise InvalidMessage('"tab" must be a page id: 1 to 64 letters, digits, "-" or "_"')


def invite(user: Any, room: Room, tab: Any = None) -> int | None:
    """Start a call in ``room`` (ringing), or join the one already there; the push's seq.

    None when ``user`` is in the room's call already (nothing changes).
    """
    check_reader(user, room)
    tab = check_tab(tab)
    with _room_locked(room) as call:
        if call is None:
            call = Call.objects.create(room=room, started_by=user)
            seq = _join(call, user, event="invite", tab=tab)
            ringing = call
            transaction.on_commit(lambda: _after_invite(ringing, room, user), robust=True)
            return seq
        if _is_in(call, user):
            return None
        return _join(call, user, event="invite", tab=tab)


def _after_invite(call: Call, room: Room, caller: Any) -> None:
    """Once the ringing call is committed: schedule its timeout, ring the room's members."""
    from chat.tasks import end_unanswered_call

    end_unanswered_call.apply_async(
        (call.pk, call.created_at.isoformat()), countdown=settings.CALL_RING_TIMEOUT_S
    )
    for user_id in ring_targets(room, caller.pk):
        ephemeral(f"user.{user_id}", ring_data(call, room, caller))


def ring_data(call: Call, room: Room, caller: Any) -> dict[str, Any]:
    """The ``ring`` event a rung user's pages get on ``user.<id>``."""
    return {
        "type": "ring",
        "call": call.pk,
        "room": room.slug,
        "room_title": str(room),
        "direct": room.is_direct,
        "from": None if caller is None else user_data(caller),
    }


def accept(user: Any, room: Room, tab: Any = None) -> int | None:
    """Join the room's live call; the push's seq (None if already in it)."""
    check_reader(user, room)
    tab = check_tab(tab)
    with _room_locked(room) as call:
        if call is None:
            raise NoCall("no call to accept in this room")
        if _is_in(call, user):
            return None
        return _join(call, user, event="accept", tab=tab)


def _everyone_declined(call: Call) -> bool:
    """Whether every member who could still answer has declined (members-only rooms)."""
    if call.room.open_to_signed_in:
        return False  # no list of who is being rung: it rings until answered or timed out
    in_call = [part.user_id for part in _in_call(call)]
    waiting = set(call.room.members.exclude(pk__in=in_call).values_list("pk", flat=True))
    declined = set(
        call.participants.filter(declined_at__isnull=False).values_list("user_id", flat=True)
    )
    return bool(waiting) and waiting <= declined


def decline(user: Any, room: Room) -> int:
    """Say no to the room's call; a ringing call everyone declined ends (``declined``)."""
    check_reader(user, room)
    with _room_locked(room) as call:
        if call is None:
            raise NoCall("no call to decline in this room")
        part, _ = CallParticipant.objects.get_or_create(call=call, user=user)
        if part.in_call:
            raise InvalidMessage("you are in this call: hang up instead")
        part.declined_at = timezone.now()
        part.save(update_fields=["declined_at"])
        _stop_ringing(call, "declined", [user.pk])  # on each of their pages
        if call.state == Call.State.RINGING and _everyone_declined(call):
            return _end(call, "declined", event="decline", user=user)
        return _push_state(call, event="decline", user=user)


def cancel(user: Any, room: Room) -> int:
    """Stop ringing a call nobody answered yet (``cancelled``)."""
    check_reader(user, room)
    with _room_locked(room) as call:
        if call is None or not _is_in(call, user):
            raise NoCall("no call of yours to cancel in this room")
        if call.state != Call.State.RINGING:
            raise InvalidMessage("the call was answered: hang up instead")
        return _end(call, "cancelled", event="cancel", user=user)


def _leave(user: Any, room: Room, *, event: str, reason: str, strict: bool) -> int | None:
    with _room_locked(room) as call:
        part = None if call is None else _participant(call, user)
        if call is None or part is None or not part.in_call:
            if strict:
                raise NoCall("you are not in a call in this room")
            return None
        return _take_out(call, part, user, event=event, reason=reason)


def _take_out(call: Call, part: CallParticipant, user: Any, *, event: str, reason: str) -> int:
    """``part`` leaves ``call`` (locked); with fewer than two left, the call ends."""
    if call.state == Call.State.RINGING:  # only the caller was in it
        return _end(call, "cancelled" if event == "hangup" else reason, event=event, user=user)
    part.left_at, part.reconnecting_since = timezone.now(), None
    part.save(update_fields=["left_at", "reconnecting_since"])
    if len(_in_call(call)) < 2:
        return _end(call, reason, event=event, user=user)
    _forget_lost_links(call, user.pk)
    return _push_state(call, event=event, user=user)


def hangup(user: Any, room: Room) -> int | None:
    """Leave the room's call; with fewer than two left it ends (``hung_up``)."""
    check_reader(user, room)
    return _leave(user, room, event="hangup", reason="hung_up", strict=True)


def _in_a_live_call(slug: str, user_id: int) -> bool:
    """Whether ``user_id`` is in the live call of room ``slug``; no lock taken.

    Three one-table queries, not one join: this runs on every socket that closes
    on a call topic, and a statement holds its tables' locks together. A join
    takes them in its own order, which can deadlock with a TRUNCATE of those
    tables taking them in another (a test database being emptied while the
    sockets of the test before close).
    """
    room_id = Room.objects.filter(slug=slug).values_list("pk", flat=True).first()
    if room_id is None:
        return False
    live = list(Call.objects.filter(room_id=room_id, state__in=LIVE).values_list("pk", flat=True))
    return bool(live) and (
        CallParticipant.objects.filter(
            call_id__in=live, user_id=user_id, joined_at__isnull=False, left_at__isnull=True
        ).exists()
    )


def participant_gone(slug: str, user_id: int) -> int | None:
    """``user_id``'s last socket on ``call.<slug>`` closed: they are reconnecting, if in a call.

    Called from the presence hook (``ws.signals.presence_left``) in whichever
    process saw the leave. The others keep their peer connections;
    ``end_rejoin_grace`` takes the user out ``CALL_REJOIN_GRACE_S`` later unless
    a page of theirs rejoined. With no grace (0) they leave at once: a ringing
    call whose caller is gone ends (``disconnected``), as does an active one
    left with fewer than two.
    """
    if not _in_a_live_call(slug, user_id):  # most sockets that close on a call topic
        return None
    room = Room.objects.filter(slug=slug).first()
    user = user_by_id(user_id)
    if room is None or user is None:
        return None
    if settings.CALL_REJOIN_GRACE_S <= 0:
        return _leave(user, room, event="disconnect", reason="disconnected", strict=False)
    with _room_locked(room) as call:
        part = None if call is None else _participant(call, user)
        if call is None or part is None or not part.in_call or part.reconnecting_since:
            return None
        part.reconnecting_since = timezone.now()
        part.save(update_fields=["reconnecting_since"])
        since = part.reconnecting_since.isoformat()
        transaction.on_commit(lambda: _schedule_grace_end(call.pk, user_id, since), robust=True)
        return _push_state(call, event="reconnecting", user=user)


def _schedule_grace_end(call_id: int, user_id: int, since: str) -> None:
    from chat.tasks import end_rejoin_grace

    end_rejoin_grace.apply_async((call_id, user_id, since), countdown=settings.CALL_REJOIN_GRACE_S)


def grace_over(call_id: int, user_id: int, since: str) -> int | None:
    """The grace period that began at ``since`` is over: if still away, ``user_id`` leaves.

    Run by the task ``participant_gone`` scheduled; a user who came back (or
    left, or went away again later: another ``since``) is left alone, so a late
    or repeated run changes nothing.
    """
    away_since = datetime.fromisoformat(since)
    part = (
        CallParticipant.objects.filter(call_id=call_id, user_id=user_id)
        .select_related("call__room", "user")
        .first()
    )
    if part is None or part.reconnecting_since != away_since:
        return None
    with _room_locked(part.call.room) as call:
        fresh = None if call is None or call.pk != call_id else _participant(call, part.user)
        if fresh is None or not fresh.in_call or fresh.reconnecting_since != away_since:
            return None  # came back, or left, while the room was being locked
        logger.info("calls: user %s did not come back to call %s in time", user_id, call_id)
        return _take_out(call, fresh, part.user, event="disconnect", reason="disconnected")


def _take_renegotiation(call: Call, user: Any) -> None:
    """Count one renegotiation of ``user`` in ``call``; ``RateLimited`` past the limit."""
    wait_s = ratelimit.take_from(
        f"call:renegotiate:{call.pk}:{user.pk}",
        settings.CALL_RENEGOTIATIONS,
        settings.CALL_RENEGOTIATION_WINDOW_S,
    )
    if wait_s:
        raise RateLimited(
            f"too many renegotiations (at most {settings.CALL_RENEGOTIATIONS} in "
            f"{settings.CALL_RENEGOTIATION_WINDOW_S:g} s): try again in {wait_s:.1f} s",
            retry_after_s=wait_s,
        )


def rejoin(user: Any, room: Room, keep: Any = None, tab: Any = None) -> int | None:
    """A page of ``user``, a participant, is back: reconnecting no more; the push's seq.

    ``keep``: the participants whose peer connection that page still holds
    (none after a reload). The others are named in ``offer_to``: the page offers
    to them afresh. None when nothing changed (not reconnecting, nothing to
    renegotiate). ``NotAllowed`` for one who is not in the room's live call
    (never was, hung up, or their grace period ended).
    """
    check_reader(user, room)
    kept = set(check_user_ids(keep, "keep", settings.CALL_MAX_PARTICIPANTS))
    tab = check_tab(tab)
    with _room_locked(room) as call:
        part = None if call is None else _participant(call, user)
        if call is None or part is None or not part.in_call:
            raise NotAllowed("you are not in this room's call (never joined, left, or too late)")
        _take_renegotiation(call, user)
        offer_to = [p.user_id for p in _in_call(call) if p.user_id not in kept | {user.pk}]
        if part.reconnecting_since is None and not offer_to:
            return None
        part.reconnecting_since = None
        part.save(update_fields=["reconnecting_since"])
        _forget_lost_links(call, user.pk, offer_to)
        return _push_state(call, event="rejoin", user=user, offer_to=offer_to, tab=tab)


def report_lost(user: Any, room: Room, peer: Any) -> int | None:
    """``user``'s page gave up on its connection to ``peer``: shown as lost to everyone.

    The seq of the state push, or None when that pair was reported already.
    """
    check_reader(user, room)
    if isinstance(peer, bool) or not isinstance(peer, int):
        raise InvalidMessage('lost needs "peer": the user id of a participant')
    with _room_locked(room) as call:
        in_call = set() if call is None else {part.user_id for part in _in_call(call)}
        if call is None or user.pk not in in_call:
            raise NotAllowed("you are not in this room's call")
        if peer == user.pk or peer not in in_call:
            raise NotAllowed(f"user {peer} is not another participant of this call")
        pair = sorted((user.pk, peer))
        if pair in call.lost_links:
            return None
        call.lost_links = [*call.lost_links, pair]
        call.save(update_fields=["lost_links"])
        return _push_state(call, event="lost", user=user)


def end_unanswered(call_id: int, created_at: str | None = None) -> int | None:
    """End call ``call_id`` if it is still ringing (``unanswered``); the push's seq, or None.

    The timeout task scheduled at the invite runs this: a call that was
    answered, cancelled or declined meanwhile is left alone. ``created_at``
    (ISO 8601) must match the call's, so a late task never ends another call
    that got the same id (a database recreated or restored since it was queued).
    """
    calls = Call.objects.filter(pk=call_id)
    if created_at is not None:
        calls = calls.filter(created_at=datetime.fromisoformat(created_at))
    call = calls.select_related("room").first()
    if call is None or call.state != Call.State.RINGING:
        return None
    with _room_locked(call.room) as live:
        if live is None or live.pk != call_id or live.state != Call.State.RINGING:
            return None  # ended meanwhile (or just now, as expired, by _room_locked)
        return _end(live, "unanswered", event="timeout")


def sweep_gone() -> int:
    """Mark as reconnecting in live calls those with no live socket on its topic, and take
    out those whose grace period is over; how many changed.

    The presence hook does this as each last socket goes, in the server process
    that sees it go: a closing socket's own, or one sweeping a dead process's
    entries. When no live process holds the topic (every server died, or was
    restarted), nobody sweeps and the call would stay live for ever: the
    periodic task ``chat.tasks.sweep_calls`` runs this. An entry not refreshed
    for ``PUSH_PRESENCE_TTL_S`` counts as gone. Who is in a call is read before
    who is present: a join needs a live socket, so one who joins in between is
    present by then. A grace period whose task was lost (no worker took it) ends
    here too.
    """
    in_calls: dict[Room, list[CallParticipant]] = {}  # a model instance hashes by its pk
    parts = CallParticipant.objects.filter(
        call__state__in=LIVE, joined_at__isnull=False, left_at__isnull=True
    ).select_related("call__room")
    for part in parts:
        in_calls.setdefault(part.call.room, []).append(part)
    grace = timedelta(seconds=settings.CALL_REJOIN_GRACE_S)
    changed = 0
    for room, room_parts in in_calls.items():
        present = presence.live_members(call_topic(room))
        for part in room_parts:
            away = part.reconnecting_since
            if away is not None and timezone.now() - away >= grace:
                seq = grace_over(part.call_id, part.user_id, away.isoformat())
            elif away is None and f"user:{part.user_id}" not in present:
                seq = participant_gone(room.slug, part.user_id)
            else:
                continue
            if seq is not None:
                logger.info("calls: swept user %s in %s's call", part.user_id, room.slug)
                changed += 1
    return changed


def _check_candidate(candidate: Any) -> dict[str, Any] | None:
    """One ICE candidate as relayed: null (end of candidates) or its known fields, checked."""
    if candidate is None:
        return None
    if not isinstance(candidate, dict) or not set(candidate) <= set(_CANDIDATE_FIELDS):
        raise InvalidMessage(
            "an ICE candidate must be null or {candidate, sdpMid, sdpMLineIndex, usernameFragment}"
        )
    for name, value in candidate.items():
        kind_ok = value is None or (
            isinstance(value, _CANDIDATE_FIELDS[name]) and not isinstance(value, bool)
        )
        if not kind_ok or (isinstance(value, str) and len(value) > 2000):
            raise InvalidMessage(f"ice candidate field {name!r} is invalid")
    return candidate


def _check_relayed(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    """What of ``data`` is relayed for an offer, answer or ICE candidate(s) (checked)."""
    if kind in ("offer", "answer"):
        sdp = data.get("sdp")
        if not isinstance(sdp, str) or not sdp or len(sdp) > MAX_SDP_CHARS:
            raise InvalidMessage(f'{kind} needs "sdp": a string of 1 to {MAX_SDP_CHARS} characters')
        return {"sdp": sdp}
    if ("candidate" in data) == ("candidates" in data):
        raise InvalidMessage(
            f'ice needs either "candidate" (one, or null) or "candidates" '
            f"(a list of 1 to {MAX_ICE_BATCH}), not {'both' if 'candidate' in data else 'neither'}"
        )
    if "candidate" in data:
        return {"candidate": _check_candidate(data["candidate"])}
    batch = data["candidates"]
    if not isinstance(batch, list) or not 1 <= len(batch) <= MAX_ICE_BATCH:
        got = f"{len(batch)} items" if isinstance(batch, list) else type(batch).__name__
        raise InvalidMessage(
            f'ice "candidates" must be a list of 1 to {MAX_ICE_BATCH} candidates, got {got}'
        )
    return {"candidates": [_check_candidate(candidate) for candidate in batch]}


def relay(user: Any, room: Room, kind: str, data: dict[str, Any]) -> None:
    """Send an offer, answer or ICE candidate(s) to one other participant of the room's call.

    It goes to ``user.<to>`` as an ephemeral event ``{"type": kind, "call",
    "room", "from", "tab", "sdp" | "candidate" | "candidates"}`` (an ``ice``
    batch stays one event, its list as sent; ``tab`` the sending page's id,
    which tells the receiver which of its peer connections it is for): not
    numbered, not kept, seen by that user's sockets alone.
    """
    check_reader(user, room)
    to = data.get("to")
    if isinstance(to, bool) or not isinstance(to, int):
        raise InvalidMessage(f'{kind} needs "to": the user id of a participant')
    relayed = _check_relayed(kind, data)
    tab = check_tab(data.get("tab"))
    call = Call.objects.filter(room=room, state__in=LIVE).first()
    if call is None:
        raise NoCall("no call in this room")
    in_call = {part.user_id for part in _in_call(call)}
    if user.pk not in in_call:
        raise NotAllowed("you are not in this call")
    if to == user.pk or to not in in_call:
        raise NotAllowed(f"user {to} is not another participant of this call")
    if kind == "offer":
        _take_renegotiation(call, user)
    message = {
        "type": kind,
        "call": call.pk,
        "room": room.slug,
        "from": user_data(user),
        "tab": tab,
        **relayed,
    }
    ephemeral(f"user.{to}", message)


def current_state(user: Any, room: Room) -> dict[str, Any] | None:
    """The room's live call as a ``call.state`` message would give it, or None."""
    check_reader(user, room)
    call = Call.objects.filter(room=room, state__in=LIVE).select_related("room").first()
    if call is None or _ring_expired(call):
        return None
    return state_data(call, event="current")


def set_muted(user: Any, room: Room, muted: Any) -> int | None:
    """``user`` turned their microphone off (``muted``) or on; the state push's seq.

    None when nothing changed. ``InvalidMessage`` unless ``muted`` is a boolean,
    ``NoCall`` unless ``user`` is in the room's call.
    """
    check_reader(user, room)
    if not isinstance(muted, bool):
        raise InvalidMessage('mute needs "muted": true or false')
    with _room_locked(room) as call:
        part = None if call is None else _participant(call, user)
        if call is None or part is None or not part.in_call:
            raise NoCall("you are not in this room's call")
        if part.muted == muted:
            return None
        part.muted = muted
        part.save(update_fields=["muted"])
        return _push_state(call, event="mute", user=user)


def _rung_rooms(user: Any) -> Any:
    """Calls in rooms whose calls ring ``user`` (members-only rooms they are in, open rooms
    they asked to be rung in), not started by ``user``."""
    from django.db.models import Q

    rung = Q(room__open_to_signed_in=False, room__members=user) | Q(
        room__open_to_signed_in=True, room__readers__user=user, room__readers__ring=True
    )
    return Call.objects.filter(rung).exclude(started_by=user).distinct()


def missed_calls(user: Any, limit: int = 50) -> list[dict[str, Any]]:
    """The calls that rang ``user`` and ended with nobody answering, newest first."""
    found = (
        _rung_rooms(user)
        .filter(state=Call.State.ENDED, answered_at__isnull=True, end_reason__in=MISSED_REASONS)
        .select_related("room", "started_by")
        .order_by("-created_at", "-id")[:limit]
    )
    return [
        {
            "id": call.pk,
            "room": call.room.slug,
            "room_title": str(call.room),
            "from": None if call.started_by is None else user_data(call.started_by),
            "at": call.created_at,
            "ended_at": call.ended_at,
            "reason": call.end_reason,
        }
        for call in found
    ]


def ringing_calls(user: Any) -> list[dict[str, Any]]:
    """The rings ``user``'s pages should show now: calls ringing them they did not decline."""
    found = (
        _rung_rooms(user)
        .filter(state=Call.State.RINGING)
        .exclude(participants__user=user, participants__declined_at__isnull=False)
        .select_related("room", "started_by")
        .order_by("created_at")
    )
    return [
        ring_data(call, call.room, call.started_by) for call in found if not _ring_expired(call)
    ]
