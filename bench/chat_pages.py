"""Chat pages in headless Chromium for the benchmarks: users in a room, a page per user."""

from __future__ import annotations

from typing import Any

from tests.support.processes import WebServer

WAIT_MS = 30_000


def users_in_room(slug: str, title: str, usernames: list[str]) -> list[str]:
    """Make the users and the members-only room ``slug``; their session cookies' values.

    ORM code: run it in a thread of its own, as Playwright's sync API keeps an
    event loop in the main one.
    """
    from chat.models import Room
    from tests.support.users import make_user, session_cookie

    users = [make_user(name) for name in usernames]
    room = Room.objects.create(slug=slug, title=title)
    room.members.add(*users)
    return [session_cookie(user).removeprefix("sessionid=") for user in users]


def open_chat(browser: Any, server: WebServer, cookie: str, slug: str, ready: str) -> Any:
    """A page signed in with ``cookie`` on room ``slug``, once its socket is open and ``ready``
    (a selector) shows."""
    context = browser.new_context()
    context.add_cookies([{"name": "sessionid", "value": cookie, "url": server.origin}])
    page = context.new_page()
    page.goto(server.http_url(f"/chat/?room={slug}"))
    page.wait_for_selector("#state[data-state='open']", timeout=WAIT_MS)
    page.wait_for_selector(ready, timeout=WAIT_MS)
    return page
