"""Keeping open sockets' access current.

When a user logs out, is deactivated or deleted, or gains or loses a permission
or a group, the change is announced (after commit) to that user's sockets on
every server process; each socket reloads its user and drops the subscriptions
it may no longer hold. Signal receivers live in ``ws/receivers.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db import transaction

from ws.publisher import publisher
from ws.topics import access_group

ACCESS_EVENT_TYPE = "push.access"


def announce_access_change(
    user_ids: Iterable[Any], reason: str, *, session_key: str | None = None
) -> None:
    """Tell these users' open sockets, once the transaction commits, to re-check access."""
    ids = sorted({int(user_id) for user_id in user_ids})
    if not ids:
        return
    event = {"type": ACCESS_EVENT_TYPE, "reason": reason, "session": session_key}

    def send() -> None:
        publisher.run(
            lambda: asyncio.gather(
                *(publisher.send_event(access_group(uid), dict(event, user=uid)) for uid in ids)
            )
        )

    transaction.on_commit(send)


def current_user(user_id: Any) -> Any:
    """The user as the database has them now (fresh permissions), or anonymous."""
    user = get_user_model()._default_manager.filter(pk=user_id, is_active=True).first()
    return user if user is not None else AnonymousUser()
