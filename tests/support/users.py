"""Users, sessions and tokens for tests that talk to a server in another process.

Use them from ``django_db(transaction=True)`` tests: the server only sees
committed rows.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client


def make_user(username: str, *perms: str, **fields: Any) -> Any:
    """A user holding ``perms`` (``"app_label.codename"``)."""
    user = get_user_model().objects.create_user(username, password="pw-" + username, **fields)
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return user


def session_cookie(user: Any) -> str:
    """A ``Cookie`` header value for a fresh login session of ``user``."""
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}"


async def in_thread(function: Any, *args: Any) -> Any:
    """Run ORM code from an async test: in a thread that closes its connection after."""
    import asyncio

    from django.db import connections

    def call() -> Any:
        try:
            return function(*args)
        finally:
            connections.close_all()

    return await asyncio.to_thread(call)
