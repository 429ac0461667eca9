"""The chat page (``/chat/``) in headless Chromium: two users in one room."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.browser import browser, in_plain_thread, signed_in_page  # noqa: F401
from tests.support.users import make_user

WAIT_MS = 10_000


def chat_page(browser: Any, server: Any, user: Any) -> tuple[Any, list[str]]:  # noqa: F811
    page, errors = signed_in_page(browser, server, user, "/chat/?room=page-room")
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
    alice, bob = in_plain_thread(make_user, "page-alice"), in_plain_thread(make_user, "page-bob")
    in_plain_thread(make_room_with, alice, bob)
    alice_page, alice_errors = chat_page(browser, daphne_server, alice)
    bob_page, bob_errors = chat_page(browser, daphne_server, bob)

    # Both are listed as here, on both pages.
    for page in (alice_page, bob_page):
        page.wait_for_function(
            "() => document.querySelectorAll('#members li').length === 2", timeout=WAIT_MS
        )
        names = page.locator("#members li .name").all_inner_texts()
        assert sorted(names) == ["page-alice", "page-bob"]

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
    last = bob_page.locator("#messages li").last
    assert (last.locator("strong").inner_text(), last.locator(".text").inner_text()) == (
        "page-alice",
        "hello bob",
    )

    # Bob sends what he was typing: Alice's page stops saying he is typing.
    bob_page.fill("#text", "hello alice")
    bob_page.press("#text", "Enter")
    alice_page.wait_for_selector("#messages li .text >> text=hello alice", timeout=WAIT_MS)
    assert alice_page.inner_text("#typing") == ""

    # A message from before the page opened comes from the history endpoint.
    late, late_errors = chat_page(browser, daphne_server, bob)
    late.wait_for_selector("#messages li .text >> text=hello bob", timeout=WAIT_MS)
    assert alice_errors == bob_errors == late_errors == []


@pytest.mark.django_db(transaction=True)
def test_the_chat_page_asks_a_visitor_to_sign_in(daphne_server, browser):  # noqa: F811
    page = browser.new_page()
    page.goto(daphne_server.http_url("/chat/"))
    assert "/accounts/login/" in page.url
    assert page.locator("input[name='username']").count() == 1
    page.close()
