"""Unread counts: each user's last-read message per room, and the pushes that keep pages right.

A user's count in a room is the room's messages after their ``last_read`` that
others wrote. It reaches their pages as ``{"type": "unread", "room", "unread",
"last_read"}`` on ``user.<id>`` (msg ``chat.unread``): when they mark a room
read (every page of theirs clears it), and after every message, for each
reader of the room. Readers are the members of a members-only or direct room,
and in an open room those who opened it once (they have a ``RoomReader``).

Each count is computed and pushed with that user's ``RoomReader`` row locked,
so a mark and a message racing for the same user are pushed in the order they
happened: the last push a page gets is the true count.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Max

from chat.models import Message, Room, RoomReader
from ws.push import push

__all__ = ["UNREAD_MSG", "after_message", "mark_read", "unread_count"]

UNREAD_MSG = "chat.unread"


def unread_count(user_id: int, room: Room, last_read: int | None) -> int:
    """Messages of ``room`` after ``last_read`` written by someone other than ``user_id``."""
    found = Message.objects.filter(room=room).exclude(author_id=user_id)
    if last_read is not None:
        found = found.filter(id__gt=last_read)
    return found.count()


def _locked_reader(user_id: int, room: Room) -> RoomReader:
    RoomReader.objects.get_or_create(user_id=user_id, room=room)
    return RoomReader.objects.select_for_update().get(user_id=user_id, room=room)


def _push_count(user_id: int, room: Room, reader: RoomReader) -> dict[str, Any]:
    data = {
        "type": "unread",
        "room": room.slug,
        "unread": unread_count(user_id, room, reader.last_read),
        "last_read": reader.last_read,
    }
    push(f"user.{user_id}", data, msg=UNREAD_MSG)
    return data


def _check_position(room: Room, last_read: object) -> int:
    from chat.services import InvalidMessage

    if isinstance(last_read, bool) or not isinstance(last_read, int) or last_read < 1:
        raise InvalidMessage('"last_read" must be a message id (a positive integer)')
    newest = room.messages.aggregate(newest=Max("id"))["newest"]
    if newest is None or last_read > newest:
        raise InvalidMessage(f"message {last_read} is ahead of the room's newest ({newest})")
    return last_read


def mark_read(user: Any, room: Room, last_read: object) -> dict[str, Any]:
    """``user`` has read ``room`` up to message ``last_read``; never moves back.

    The caller checked that ``user`` may read ``room``. Pushes the count to
    every page of ``user`` and returns it (``InvalidMessage``: nothing written).
    """
    position = _check_position(room, last_read)
    with transaction.atomic():
        reader = _locked_reader(user.pk, room)
        if reader.last_read is None or position > reader.last_read:
            reader.last_read = position
            reader.save(update_fields=["last_read"])
        return _push_count(user.pk, room, reader)


def _reader_ids(room: Room) -> set[int]:
    if room.open_to_signed_in:
        return set(RoomReader.objects.filter(room=room).values_list("user_id", flat=True))
    return set(room.members.values_list("pk", flat=True))


def after_message(message: Message) -> None:
    """Push the new counts of ``message``'s room to its readers (run after it was pushed).

    Its author has read the room up to it: their count is pushed too (zero
    here, unless someone wrote after it), which clears it on their other pages.
    """
    room = message.room
    for user_id in sorted(_reader_ids(room) | ({message.author_id} - {None})):
        with transaction.atomic():
            reader = _locked_reader(user_id, room)
            if user_id == message.author_id and (reader.last_read or 0) < message.pk:
                reader.last_read = message.pk
                reader.save(update_fields=["last_read"])
            _push_count(user_id, room, reader)
