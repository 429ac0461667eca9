"""Membership changes reach open sockets: a removed member's subscription is dropped.

When users leave a room's members (removed, cleared, or the room deleted),
their sockets are told after commit (``ws.access``) and each drops
``chat.<room>`` with an error frame ``4003`` if it may no longer read it.
"""

from __future__ import annotations

from typing import Any

from django.db.models.signals import m2m_changed, pre_delete

from chat.models import Room
from ws.access import announce_access_change


def on_members_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: set[Any] | None, **kwargs: Any
) -> None:
    if reverse:  # from the user's side: ``user.chat_rooms.remove(room)`` or ``.clear()``
        if action in ("post_remove", "post_clear"):
            announce_access_change([instance.pk], "left a room")
    elif action == "pre_clear":  # who the members were is gone after the clear
        announce_access_change(instance.members.values_list("pk", flat=True), "left the room")
    elif action == "post_remove" and pk_set:
        announce_access_change(pk_set, "left the room")


def on_room_deleted(sender: Any, instance: Room, **kwargs: Any) -> None:
    announce_access_change(instance.members.values_list("pk", flat=True), "room deleted")


def connect() -> None:
    m2m_changed.connect(
        on_members_changed, sender=Room.members.through, dispatch_uid="chat.members"
    )
    pre_delete.connect(on_room_deleted, sender=Room, dispatch_uid="chat.room_deleted")
