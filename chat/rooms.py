"""Rooms as a user's room list shows them, and the changes to that list made from the page.

A room as listed (``room_data``) carries the user's unread count, last-read
position and whether its calls ring them. Changes reach the pages live as
``{"type": "rooms", "event": "added" | "removed" | "changed", "room": ...}``
(msg ``chat.rooms``): on ``user.<id>`` for the users a members-only or direct
room concerns, on ``chat._rooms`` (every signed-in page) for open rooms.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils.text import slugify

from chat import people, unread
from chat.models import DIRECT_PREFIX, RESERVED_PREFIX, Room, RoomReader, user_data
from chat.services import (
    InvalidMessage,
    NotAllowed,
    check_user_ids,
    direct_partner,
    find_or_make_direct_room,
    readable_rooms,
    user_by_id,
)
from ws.push import push

__all__ = [
    "OPEN_ROOMS_TOPIC",
    "ROOMS_MSG",
    "announce",
    "create_room",
    "leave_room",
    "listed_rooms",
    "open_direct",
    "room_data",
    "set_ring",
]

ROOMS_MSG = "chat.rooms"
# Open rooms made or changed: every signed-in page listens. No room takes this slug
# (room slugs never start with "_": see RESERVED_PREFIX).
OPEN_ROOMS_TOPIC = f"chat.{RESERVED_PREFIX}rooms"


def _shared_data(room: Room) -> dict[str, Any]:
    return {
        "slug": room.slug,
        "title": str(room),
        "topic": room.topic,
        "open": room.open_to_signed_in,
        "direct": room.is_direct,
    }


def room_data(room: Room, user: Any, reader: RoomReader | None = None) -> dict[str, Any]:
    """``room`` as ``user``'s room list shows it (``reader``: their RoomReader, if known)."""
    if reader is None:
        reader = RoomReader.objects.filter(room=room, user_id=user.pk).first()
    last_read = None if reader is None else reader.last_read
    # An open room counts only for those who opened it: the others never followed it.
    counted = not room.open_to_signed_in or reader is not None
    data = _shared_data(room)
    data.update(
        unread=unread.unread_count(user.pk, room, last_read) if counted else 0,
        last_read=last_read,
        ring=(not room.open_to_signed_in) or bool(reader and reader.ring),
    )
    if room.is_direct:
        partner = direct_partner(room, user)
        data["with"] = None if partner is None else user_data(partner)
    return data


def listed_rooms(user: Any) -> list[dict[str, Any]]:
    """Every room ``user`` may read, as their room list shows it."""
    found = list(readable_rooms(user).prefetch_related("members"))
    readers = {
        reader.room_id: reader
        for reader in RoomReader.objects.filter(user_id=user.pk, room__in=found)
    }
    return [room_data(room, user, readers.get(room.pk)) for room in found]


def announce(room: Room, event: str, user_ids: Iterable[int] = ()) -> None:
    """After commit, tell the pages concerned that ``room`` was added, removed or changed.

    Open rooms go to ``OPEN_ROOMS_TOPIC`` (its data then without per-user
    fields); the others to each of ``user_ids``' ``user.<id>``, with their own.
    """
    from django.contrib.auth import get_user_model

    ids = sorted(set(user_ids))

    def send() -> None:
        if event == "removed":
            gone = {"slug": room.slug, "title": str(room)}
            for user_id in ids:
                push(f"user.{user_id}", _event(event, gone), msg=ROOMS_MSG)
            return
        if room.open_to_signed_in:
            shared = {**_shared_data(room), "unread": 0, "last_read": None, "ring": False}
            push(OPEN_ROOMS_TOPIC, _event(event, shared), msg=ROOMS_MSG)
            return
        for user in get_user_model()._default_manager.filter(pk__in=ids):
            push(f"user.{user.pk}", _event(event, room_data(room, user)), msg=ROOMS_MSG)

    transaction.on_commit(send, robust=True)


def _event(event: str, room: dict[str, Any]) -> dict[str, Any]:
    return {"type": "rooms", "event": event, "room": room}


def open_direct(user: Any, other_id: int) -> Room:
    """The direct conversation of ``user`` with user ``other_id``, made (and announced to
    both) the first time. ``NotAllowed`` when ``user`` may not contact them."""
    if other_id == user.pk:
        raise InvalidMessage("a direct conversation needs two different users")
    other = user_by_id(other_id)
    if other is None or not people.may_contact(user, other.pk):
        raise NotAllowed("no such user, or not one you may contact")
    room, made = find_or_make_direct_room(user, other)
    if made:
        announce(room, "added", [user.pk, other.pk])
    return room


def _check_title(title: object) -> str:
    if not isinstance(title, str) or not title.strip():
        raise InvalidMessage('"title" must be a non-empty string')
    title = title.strip()
    limit = Room._meta.get_field("title").max_length or 200
    if len(title) > limit:
        raise InvalidMessage(f'"title" is longer than {limit} characters')
    return title


def _check_members(user: Any, member_ids: object) -> list[int]:
    listed = check_user_ids(member_ids, "members", settings.CHAT_ROOM_MAX_MEMBERS - 1)
    wanted = set(listed) - {user.pk}
    allowed = set(people.contactable(user).filter(pk__in=wanted).values_list("pk", flat=True))
    refused = sorted(wanted - allowed)
    if refused:
        raise InvalidMessage(f"no such user, or not one you may contact: {refused[0]}")
    return sorted(wanted)


def _new_slug(title: str) -> str:
    base = slugify(title)[:40].strip("-_") or "room"
    if base.startswith((DIRECT_PREFIX, RESERVED_PREFIX)):
        base = f"room-{base}"
    slug = base
    while Room.objects.filter(slug=slug).exists():
        slug = f"{base}-{secrets.token_hex(3)}"
    return slug


def create_room(user: Any, title: object, open_room: object, member_ids: object) -> Room:
    """A room made by ``user`` (who needs ``chat.add_room``), with ``user`` and the members.

    ``InvalidMessage`` for a bad title, flag or member list; ``NotAllowed``
    without the permission. Nothing is written then.
    """
    if not (user.is_authenticated and user.is_active and user.has_perm("chat.add_room")):
        raise NotAllowed("you may not make rooms (the chat.add_room permission)")
    title = _check_title(title)
    if open_room is None:
        open_room = False
    if not isinstance(open_room, bool):
        raise InvalidMessage('"open" must be true or false')
    members = _check_members(user, member_ids)
    with transaction.atomic():
        room = Room(slug=_new_slug(title), title=title, open_to_signed_in=open_room)
        room.full_clean()
        room.save()
        room.members.add(user, *members)
        announce(room, "added", [user.pk, *members])
    return room


def leave_room(user: Any, room: Room) -> None:
    """``user`` is no longer a member of ``room`` (not a direct one); their pages are told."""
    if room.is_direct:
        raise InvalidMessage("a direct conversation cannot be left")
    if not room.members.filter(pk=user.pk).exists():
        raise InvalidMessage("you are not a member of this room")
    with transaction.atomic():
        room.members.remove(user)  # their sockets drop chat.<room> if they may not read it now
        RoomReader.objects.filter(room=room, user_id=user.pk).update(ring=False)
        if room.open_to_signed_in:
            transaction.on_commit(lambda: _push_changed(room, user), robust=True)
        else:
            announce(room, "removed", [user.pk])


def _push_changed(room: Room, user: Any) -> None:
    push(f"user.{user.pk}", _event("changed", room_data(room, user)), msg=ROOMS_MSG)


def set_ring(user: Any, room: Room, ring: object) -> dict[str, Any]:
    """Whether calls in the open room ``room`` ring ``user``; the room as they list it now."""
    if not isinstance(ring, bool):
        raise InvalidMessage('"ring" must be true or false')
    if not room.open_to_signed_in:
        raise InvalidMessage("members-only rooms ring all their members")
    RoomReader.objects.update_or_create(user_id=user.pk, room=room, defaults={"ring": ring})
    return room_data(room, user)
