"""Receivers that announce access changes to open sockets (connected in ``WsConfig.ready``)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from ws.access import announce_access_change


def on_logged_out(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if user is not None and user.is_authenticated:
        session = getattr(request, "session", None)
        announce_access_change(
            [user.pk], "logged out", session_key=getattr(session, "session_key", None)
        )


# Saves that cannot change what a user may see: Django stamps last_login on every login.
_ACCESS_NEUTRAL_FIELDS = frozenset({"last_login"})


def on_user_saved(
    sender: Any, instance: Any, created: bool, update_fields: Any = None, **kwargs: Any
) -> None:
    if created or (update_fields and set(update_fields) <= _ACCESS_NEUTRAL_FIELDS):
        return
    announce_access_change([instance.pk], "account changed")


def on_user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    announce_access_change([instance.pk], "account deleted")


def _users_of_groups(group_ids: Any) -> list[int]:
    return list(
        get_user_model()._default_manager.filter(groups__in=group_ids).values_list("pk", flat=True)
    )


def _owners_changed(
    instance: Any, action: str, reverse: bool, pk_set: Any, reverse_accessor: str
) -> list[Any]:
    """Ids on the owning side (users, or groups) of a many-to-many change; [] if none.

    Works from either side: ``user.groups.add(g)`` or ``g.user_set.add(user)``.
    A clear is caught before it happens, while its rows can still be read.
    """
    if action not in ("post_add", "post_remove", "pre_clear"):
        return []
    if not reverse:
        return [instance.pk]
    if action == "pre_clear":
        return list(getattr(instance, reverse_accessor).values_list("pk", flat=True))
    return list(pk_set or ())


def on_user_m2m_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any
) -> None:
    """A user's permissions or groups changed."""
    users = _owners_changed(instance, action, reverse, pk_set, "user_set")
    announce_access_change(users, "permissions changed")


def on_group_permissions_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any
) -> None:
    """A group's permissions changed: every member is affected."""
    groups = _owners_changed(instance, action, reverse, pk_set, "group_set")
    if groups:
        announce_access_change(_users_of_groups(groups), "group permissions changed")


def connect() -> None:
    from django.contrib.auth.signals import user_logged_out
    from django.db.models.signals import m2m_changed, post_delete, post_save

    user = get_user_model()
    user_logged_out.connect(on_logged_out, dispatch_uid="ws.access.logged_out")
    post_save.connect(on_user_saved, sender=user, dispatch_uid="ws.access.user_saved")
    post_delete.connect(on_user_deleted, sender=user, dispatch_uid="ws.access.user_deleted")
    for through in (user.user_permissions.through, user.groups.through):
        m2m_changed.connect(
            on_user_m2m_changed, sender=through, dispatch_uid=f"ws.access.{through.__name__}"
        )
    m2m_changed.connect(
        on_group_permissions_changed,
        sender=Group.permissions.through,
        dispatch_uid="ws.access.group_permissions",
    )
