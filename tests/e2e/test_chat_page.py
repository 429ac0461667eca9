"""The chat page (``/chat/``) in headless Chromium: two users in one room."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.support.browser import browser  # noqa: F401 - a fixture
from tests.support.users import make_user, session_cookie

WAIT_MS = 10_000


def in_thread(function: Any, *args: Any) -> Any:
    """The ORM from a plain thread: Playwright's sync API runs an event loop in this one.

    The thread's database connection is closed before it ends: one left open
    would keep the test database from being dropped at the end of the session.
    """

    def call() -> Any:
        from django.db import connections

        try:
            return function(*args)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


def signed_in_page(browser: Any, server: Any, user: Any) -> tuple[Any, list[str]]:  # noqa: F811
    context = browser.new_context()
    cookie = in_thread(session_cookie, user).removeprefix("sessionid=")
    context.add_cookies([{"name": "sessionid", "value": cookie, "url": server.origin}])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.http_url("/chat/?room=page-room"))
    page.wait_for_selector("#state[data-state='open']", timeout=WAIT_MS)
    page.wait_for_selector("#text:not([disabled])", timeout=WAIT_MS)
    return page, errors


def make_room_with(*users: Any) -> None:
    from chat.models import Room

    room = Room.objects.create(slug="page-room", title="Page room")
    room.members.add(*users)


@pytest.mark.django_db(transaction=True)
def test_two_users_chat_see_each_other_and_who_is_typing(
    daphne_server,
    browser,  # noqa: F811
):
    alice, bob = in_thread(make_user, "page-alice"), in_thread(make_user, "page-bob")
    in_thread(make_room_with, alice, bob)
    alice_page, alice_errors = signed_in_page(browser, daphne_server, alice)
    bob_page, bob_errors = signed_in_page(browser, daphne_server, bob)

    # Both are listed as here, on both pages.
    for page in (alice_page, bob_page):
        page.wait_for_function(
            "() => document.querySelectorAll('#members li').length === 2", timeout=WAIT_MS
        )
        assert sorted(page.locator("#members li").all_inner_texts()) == ["page-alice", "page-bob"]

    # Bob types: Alice sees it (Bob does not see himself typing).
    bob_page.type("#text", "hel")
    alice_page.wait_for_function(
        "() => document.getElementById('typing').textContent.includes('page-bob')",
        timeout=WAIT_MS,
    )
    assert bob_page.inner_text("#typing") == ""

    # Alice sends: the message shows on both pages, as the server pushed it.
    alice_page.fill("#text", "hello bob")
    alice_page.press("#text", "Enter")
    for page in (alice_page, bob_page):
        page.wait_for_selector("#messages li .text >> text=hello bob", timeout=WAIT_MS)
    assert bob_page.locator("#messages li").last.inner_text() == "page-alice hello bob"

    # Bob sends what he was typing: Alice's page stops saying he is typing.
    bob_page.fill("#text", "hello alice")
    bob_page.press("#text", "Enter")
    alice_page.wait_for_selector("#messages li .text >> text=hello alice", timeout=WAIT_MS)
    assert alice_page.inner_text("#typing") == ""

    # A message from before the page opened comes from the history endpoint.
    late, late_errors = signed_in_page(browser, daphne_server, bob)
    late.wait_for_selector("#messages li .text >> text=hello bob", timeout=WAIT_MS)
    assert alice_errors == bob_errors == late_errors == []


@pytest.mark.django_db(transaction=True)
def test_the_chat_page_asks_a_visitor_to_sign_in(daphne_server, browser):  # noqa: F811
    page = browser.new_page()
    page.goto(daphne_server.http_url("/chat/"))
    assert "/accounts/login/" in page.url
    assert page.locator("input[name='username']").count() == 1
    page.close()
