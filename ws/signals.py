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


def on_user_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if not created:
        announce_access_change([instance.pk], "account changed")


def on_user_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    announce_access_change([instance.pk], "account deleted")


def _users_of_groups(group_ids: Any) -> list[int]:
    return list(
        get_user_model()._default_manager.filter(groups__in=group_ids).values_list("pk", flat=True)
    )


def on_user_m2m_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any
) -> None:
    """A user's permissions or groups changed (from either side of the relation)."""
    if action not in ("post_add", "post_remove", "pre_clear"):
        return
    if not reverse:
        announce_access_change([instance.pk], "permissions changed")
    elif action == "pre_clear":
        announce_access_change(
            instance.user_set.values_list("pk", flat=True), "permissions changed"
        )
    else:
        announce_access_change(pk_set or (), "permissions changed")


def on_group_permissions_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any, **kwargs: Any
) -> None:
    """A group's permissions changed: every member is affected."""
    if action not in ("post_add", "post_remove", "pre_clear"):
        return
    if not reverse:
        announce_access_change(_users_of_groups([instance.pk]), "group permissions changed")
    elif action == "pre_clear":
        group_ids = instance.group_set.values_list("pk", flat=True)
        announce_access_change(_users_of_groups(group_ids), "group permissions changed")
    else:
        announce_access_change(_users_of_groups(pk_set or ()), "group permissions changed")


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
