"""Chat's side of the transport: who may use ``chat.<room>``, and what a publish does.

Configured in ``ChatConfig.ready`` (every process):

- ``chat.<room>``: subscribe and publish for those who may read the room
  (open rooms: any signed-in user; others: members; direct: its two users; no
  such room: nobody). A publish goes to ``publish``: ``{"text": ...}`` is a
  message (``services.send_message``), ``{"type": "typing"}`` a typing
  indicator (``services.send_typing``). The consumer only turns ``ChatError``
  into an error frame.
- ``room.<room>`` (the seed route): clients may send ``{"message": ...}`` to a
  seed room whose Room of the same slug has ``allow_client_messages``.
"""

from __future__ import annotations

from typing import Any

from chat.models import Room
from chat.services import (
    ChatError,
    InvalidMessage,
    NotAllowed,
    can_read_slug,
    send_message,
    send_typing,
)
from ws import topics

__all__ = ["configure_topics", "publish", "seed_room_accepts_messages"]


def seed_room_accepts_messages(user: Any, param: str | None) -> bool:
    """The seed room ``param`` relays client messages: its Room allows them."""
    return bool(param) and Room.objects.filter(slug=param, allow_client_messages=True).exists()


def publish(user: Any, topic: topics.Topic, data: Any) -> int | None:
    """A socket's publish on ``chat.<room>``: a message (its seq) or a typing indicator."""
    try:
        room = Room.objects.filter(slug=topic.param).first()
        if room is None:
            raise NotAllowed("no such room")
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


def configure_topics() -> None:
    topics.configure("chat", subscribe=can_read_slug, publish=can_read_slug, on_publish=publish)
    topics.configure("room", publish=seed_room_accepts_messages)
