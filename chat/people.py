"""Who may contact whom: the people picker, and the check behind direct rooms and new rooms.

``CHAT_CONTACT_RULE`` names a function ``(user) -> QuerySet`` of the users
``user`` may contact (default ``active_users``: every other active user). A
rule narrows that set, for example to the user's own groups::

    def same_groups(user):
        return active_users(user).filter(groups__in=user.groups.all()).distinct()
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.db.models import QuerySet
from django.utils.module_loading import import_string

__all__ = ["MAX_QUERY_CHARS", "active_users", "contactable", "may_contact", "search"]

MAX_QUERY_CHARS = 100


def active_users(user: Any) -> QuerySet[Any]:
    """The default rule: every active user but ``user``."""
    return get_user_model()._default_manager.filter(is_active=True).exclude(pk=user.pk)


@cache
def _rule(path: str) -> Callable[[Any], QuerySet[Any]]:
    try:
        return import_string(path)
    except ImportError as error:
        raise ImproperlyConfigured(f"CHAT_CONTACT_RULE {path!r}: {error}") from error


def contactable(user: Any) -> QuerySet[Any]:
    """The users ``user`` may contact (none for a visitor or an inactive user), never ``user``."""
    model = get_user_model()
    if user is None or not user.is_authenticated or not user.is_active:
        return model._default_manager.none()
    return _rule(settings.CHAT_CONTACT_RULE)(user).exclude(pk=user.pk)


def may_contact(user: Any, other_id: int) -> bool:
    """Whether ``user`` may start a conversation with, or add to a room, user ``other_id``."""
    return contactable(user).filter(pk=other_id).exists()


def search(user: Any, query: str, limit: int) -> list[Any]:
    """Up to ``limit`` users ``user`` may contact whose name contains ``query``, by name."""
    field = get_user_model().USERNAME_FIELD
    found = contactable(user)
    if query:
        found = found.filter(**{f"{field}__icontains": query})
    return list(found.order_by(field)[:limit])
