"""Chat's side of the transport: who may use ``chat.<room>``, and what a publish does.

Configured in ``ChatConfig.ready`` (every process):

- ``chat.<room>``: subscribe and publish for those who may read the room
  (open rooms: any signed-in user; others: members; direct: its two users; no
  such room: nobody). A publish goes to ``publish``: ``{"text": ...}`` is a
  message (``services.send_message``), ``{"type": "typing"}`` a typing
  indicator (``services.send_typing``). The consumer only turns ``ChatError``
  into an error frame.
- ``chat._rooms``: open rooms made or changed (``chat.rooms``), for any signed-in
  page to listen to.
- ``room.<room>`` (the seed route): clients may send ``{"message": ...}`` to a
  seed room whose Room of the same slug has ``allow_client_messages``.
- ``call.<room>``: the room's voice calls, for those who may read the room. A
  publish goes to ``call_publish`` (``{"type": "invite" | "accept" | "decline" |
  "cancel" | "hangup" | "rejoin" | "lost" | "mute" | "offer" | "answer" | "ice", ...}``,
  see ``chat.calls``; an ``ice`` carries ``"candidate"`` or a batch,
  ``"candidates"``, a ``rejoin`` the peers it ``"keep"``s, a ``lost`` its
  ``"peer"``, a ``mute`` its ``"muted"`` flag); and when a user's last socket leaves the topic
  (``ws.signals.presence_left``) they are reconnecting in the room's call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from channels.db import database_sync_to_async

from chat import calls
from chat.models import Room
from chat.rooms import OPEN_ROOMS_TOPIC
from chat.services import (
    ChatError,
    InvalidMessage,
    NotAllowed,
    can_read_slug,
    send_message,
    send_typing,
)
from ws import presence, topics
from ws.signals import presence_left

__all__ = ["call_publish", "configure_topics", "publish", "seed_room_accepts_messages"]


def seed_room_accepts_messages(user: Any, param: str | None) -> bool:
    """The seed room ``param`` relays client messages: its Room allows them."""
    return bool(param) and Room.objects.filter(slug=param, allow_client_messages=True).exists()


def _room_of(topic: topics.Topic) -> Room:
    """The Room a ``chat.<room>`` or ``call.<room>`` topic names."""
    room = Room.objects.filter(slug=topic.param).first()
    if room is None:
        raise NotAllowed("no such room")
    return room


def publish(user: Any, topic: topics.Topic, data: Any) -> int | None:
    """A socket's publish on ``chat.<room>``: a message (its seq) or a typing indicator."""
    try:
        room = _room_of(topic)
        if not isinstance(data, dict):
            raise InvalidMessage('data must be {"text": ...} or {"type": "typing"}')
        kind = data.get("type", "message")
        if kind == "typing":
            send_typing(user, room)
            return None
        if kind != "message":
            raise InvalidMessage(f"unknown type {str(kind)[:32]!r}: 'message' or 'typing'")
        return send_message(user, room, data.get("text")).seq
    except ChatError as error:
        raise topics.PublishRefused(error.code, str(error)) from None


_CALL_ACTIONS: dict[str, Callable[[Any, Room, dict[str, Any]], int | None]] = {
    "invite": lambda user, room, data: calls.invite(user, room, data.get("tab")),
    "accept": lambda user, room, data: calls.accept(user, room, data.get("tab")),
    "decline": lambda user, room, data: calls.decline(user, room),
    "cancel": lambda user, room, data: calls.cancel(user, room),
    "hangup": lambda user, room, data: calls.hangup(user, room),
    "rejoin": lambda user, room, data: calls.rejoin(user, room, data.get("keep"), data.get("tab")),
    "lost": lambda user, room, data: calls.report_lost(user, room, data.get("peer")),
    "mute": lambda user, room, data: calls.set_muted(user, room, data.get("muted")),
}
# Actions that put the user (back) in the call: they need a socket on the topic.
_JOINING = ("invite", "accept", "rejoin")


def call_publish(user: Any, topic: topics.Topic, data: Any) -> int | None:
    """A socket's publish on ``call.<room>``: a state change (its seq) or a relayed SDP/ICE.

    Joining (``invite``, ``accept``) needs a socket subscribed to the topic:
    the call follows that presence, and ends for a user whose last one leaves.
    """
    try:
        room = _room_of(topic)
        kind = data.get("type") if isinstance(data, dict) else None
        if kind in calls.RELAYED:
            calls.relay(user, room, kind, data)
            return None
        action = _CALL_ACTIONS.get(kind) if isinstance(kind, str) else None
        if action is None:
            kinds = ", ".join([*_CALL_ACTIONS, *calls.RELAYED])
            raise InvalidMessage(f'data must be {{"type": ...}}, one of {kinds}')
        joining = kind in _JOINING
        member_id = f"user:{user.pk}"
        if joining and not presence.is_present(topic.name, member_id):
            raise InvalidMessage(f"subscribe to {topic.name} before joining its call")
        seq = action(user, room, data)
        if joining and not presence.is_present(topic.name, member_id):
            # Their last socket left between the check above and the join's commit: the
            # leave's hook may have run first and found them in no call. Either that
            # leave happened before this second check (seen here, so they leave now)
            # or after it, hence after the commit (its hook finds them in the call).
            calls.participant_gone(room.slug, user.pk)
        return seq
    except ChatError as error:
        raise topics.PublishRefused(error.code, str(error)) from None


async def on_presence_left(sender: Any, topic: str, member: Any, **kwargs: Any) -> None:
    """A user's last socket left ``call.<room>``: they are reconnecting in the room's call."""
    kind, _, slug = topic.partition(".")
    member_id = str(member.get("id", "")) if isinstance(member, dict) else ""
    if kind != "call" or not member_id.startswith("user:"):
        return
    await database_sync_to_async(calls.participant_gone)(slug, int(member_id.removeprefix("user:")))


def configure_topics() -> None:
    topics.register(
        "chat",
        subscribe=can_read_slug,
        publish=can_read_slug,
        on_publish=publish,
        presence=True,
        describe="a chat room",
    )
    # Open rooms made or changed (chat.rooms): for every signed-in page, to listen only.
    topics.declare(
        OPEN_ROOMS_TOPIC, subscribe=topics.signed_in, publish=topics.nobody, presence=False
    )
    topics.configure("room", publish=seed_room_accepts_messages)
    # Call signalling is stale within a minute: no point replaying an old offer.
    topics.register(
        "call",
        subscribe=can_read_slug,
        publish=can_read_slug,
        on_publish=call_publish,
        presence=True,
        history_ttl_s=60,
        describe="a call's signalling",
    )
    presence_left.connect(on_presence_left, dispatch_uid="chat.calls.presence_left")
