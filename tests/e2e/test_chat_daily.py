"""The chat page's daily use in headless Chromium: people, live room lists, unread
counts, history paging, new rooms and leaving, and message times."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from tests.chat.rooms import make_room
from tests.support.browser import (  # noqa: F401
    browser,
    in_plain_thread,
    media_browser,
    signed_in_page,
)
from tests.support.users import make_user

WAIT_MS = 10_000

# Whether push.js holds the topic, subscribed: pushes made from now on reach the page.
SUBSCRIBED = "(topic) => Boolean(window.chatPage && chatPage.client.isSubscribed(topic))"

# Scroll the message list to its top until every page of the history is in.
SCROLL_TO_THE_START = """() => {
    const list = document.getElementById("messages");
    list.scrollTop = 0;
    return list.dataset.complete === "true";
}"""

# The page holds the room as read up to that message (its last_read), as the server said.
READ_UP_TO = """([slug, id]) => {
    const room = chatPage.rooms().find((room) => room.slug === slug);
    return Boolean(room && room.last_read === id);
}"""


def chat_page(
    browser: Any,  # noqa: F811
    server: Any,
    user: Any,
    room: str | None = None,
    **context_options: Any,
) -> tuple[Any, list[str]]:
    """``/chat/`` signed in as ``user`` (``?room=``), once its pushes for ``user`` reach it."""
    path = "/chat/" if room is None else f"/chat/?room={room}"
    page, errors = signed_in_page(browser, server, user, path, **context_options)
    wait_ready(page, user, room)
    return page, errors


def wait_ready(page: Any, user: Any, room: str | None) -> None:
    page.wait_for_selector("#state[data-state='open']", timeout=WAIT_MS)
    page.wait_for_function(SUBSCRIBED, arg=f"user.{user.pk}", timeout=WAIT_MS)
    shared = page.evaluate(
        "() => JSON.parse(document.getElementById('chat-config').textContent).openRoomsTopic"
    )
    if shared:  # open rooms made or changed come there
        page.wait_for_function(SUBSCRIBED, arg=shared, timeout=WAIT_MS)
    if room is not None:
        wait_history(page, room)


def wait_history(page: Any, room: str) -> None:
    """``room`` is on screen with its history loaded (as far as it pages on by itself)."""
    page.wait_for_selector(f"#messages[data-room='{room}'][data-complete]", timeout=WAIT_MS)


def room_item(slug: str) -> str:
    return f"#rooms li[data-slug='{slug}']"


def direct_slug(one: Any, other: Any) -> str:
    low, high = sorted((one.pk, other.pk))
    return f"dm-{low}-{high}"


def send(user: Any, slug: str, text: str) -> Any:
    from chat.models import Room
    from chat.services import send_message

    return send_message(user, Room.objects.get(slug=slug), text)


@pytest.mark.django_db(transaction=True)
def test_message_from_the_people_picker_opens_the_conversation_and_lists_it_live_for_the_other(
    daphne_server,
    alice,
    bob,
    browser,  # noqa: F811
):
    alice_page, alice_errors = chat_page(browser, daphne_server, alice)
    bob_page, bob_errors = chat_page(browser, daphne_server, bob)
    slug = direct_slug(alice, bob)

    alice_page.fill("#people-q", "bo")
    person = f"#people[data-q='bo'] li[data-id='{bob.pk}']"
    alice_page.wait_for_selector(person, timeout=WAIT_MS)
    assert alice_page.locator("#people li .name").all_inner_texts() == ["bob"]
    assert alice_page.locator(f"{person} button").all_inner_texts() == ["Message", "Call"]

    alice_page.click(f"{person} button[data-action='message']")
    wait_history(alice_page, slug)
    assert alice_page.inner_text("#room-title") == "@bob"
    assert alice_page.get_attribute(room_item(slug), "class") == "current"
    assert alice_page.is_hidden("#leave")  # a direct conversation cannot be left

    # Bob's list gains it without a reload; he opens it and they are both "here now".
    bob_page.wait_for_selector(room_item(slug), timeout=WAIT_MS)
    assert bob_page.inner_text(f"{room_item(slug)} .name") == "@alice"
    bob_page.click(f"{room_item(slug)} button")
    wait_history(bob_page, slug)
    alice_page.wait_for_selector(f"#members li[data-id='{bob.pk}']", timeout=WAIT_MS)
    # Every other person has Message and Call; I have neither.
    assert alice_page.locator(f"#members li[data-id='{bob.pk}'] button").count() == 2
    assert alice_page.locator(f"#members li[data-id='{alice.pk}'] button").count() == 0

    alice_page.fill("#text", "hi bob")
    alice_page.press("#text", "Enter")
    bob_page.wait_for_selector("#messages li .text >> text=hi bob", timeout=WAIT_MS)
    assert alice_errors == bob_errors == []


@pytest.mark.media
@pytest.mark.django_db(transaction=True)
def test_call_from_the_people_picker_rings_the_other_who_accepts_into_the_conversation(
    daphne_server,
    alice,
    bob,
    media_browser,  # noqa: F811
):
    alice_page, alice_errors = chat_page(media_browser, daphne_server, alice)
    bob_page, bob_errors = chat_page(media_browser, daphne_server, bob)
    slug = direct_slug(alice, bob)

    alice_page.fill("#people-q", "bob")
    person = f"#people[data-q='bob'] li[data-id='{bob.pk}']"
    alice_page.wait_for_selector(person, timeout=WAIT_MS)
    alice_page.click(f"{person} button[data-action='call']")
    wait_history(alice_page, slug)
    alice_page.wait_for_selector(
        f"#call[data-room='{slug}'][data-phase='ringing']", timeout=WAIT_MS
    )

    # Bob looks at no room: the ring says who calls; accepting opens the conversation.
    bob_page.wait_for_selector("#ring:not([hidden])", timeout=WAIT_MS)
    assert bob_page.inner_text("#ring-text") == "alice is calling"
    bob_page.wait_for_selector(room_item(slug), timeout=WAIT_MS)
    bob_page.click("#ring-accept")
    wait_history(bob_page, slug)
    for page in (alice_page, bob_page):
        page.wait_for_selector(f"#call[data-room='{slug}'][data-phase='in-call']", timeout=WAIT_MS)
    assert alice_page.inner_text("#error") == ""
    assert alice_errors == bob_errors == []


@pytest.mark.django_db(transaction=True)
def test_unread_badge_counts_live_and_opening_the_room_clears_it_on_every_page(
    daphne_server,
    alice,
    bob,
    browser,  # noqa: F811
):
    in_plain_thread(make_room, "news", alice, bob)
    in_plain_thread(make_room, "other", alice, bob)
    bob_pages = [chat_page(browser, daphne_server, bob, "other") for _ in range(2)]
    for page, _ in bob_pages:
        assert page.get_attribute(room_item("news"), "data-unread") == "0"
        assert page.is_hidden(f"{room_item('news')} .badge")

    # Three messages while Bob looks at another room: a badge of 3, live, on both pages.
    for number in range(3):
        in_plain_thread(send, alice, "news", f"news {number}")
    for page, _ in bob_pages:
        page.wait_for_selector(f"{room_item('news')}[data-unread='3']", timeout=WAIT_MS)
        assert page.inner_text(f"{room_item('news')} .badge") == "3"
        assert page.title() == "(3) Chat · Django push"
    assert bob_pages[0][0].get_attribute(room_item("other"), "data-unread") == "0"

    # He opens it on one page: read there, cleared on both.
    reader, other = bob_pages[0][0], bob_pages[1][0]
    reader.click(f"{room_item('news')} button")
    wait_history(reader, "news")
    for page in (reader, other):
        page.wait_for_selector(f"{room_item('news')}[data-unread='0']", timeout=WAIT_MS)
        assert page.is_hidden(f"{room_item('news')} .badge")

    # A message while the room is on screen is read at once: no badge comes to stay.
    more = in_plain_thread(send, alice, "news", "one more")
    reader.wait_for_selector("#messages li .text >> text=one more", timeout=WAIT_MS)
    for page in (reader, other):
        page.wait_for_function(READ_UP_TO, arg=["news", more.pk], timeout=WAIT_MS)
        assert page.get_attribute(room_item("news"), "data-unread") == "0"

    # And after a reload: the server keeps it.
    other.reload()
    wait_ready(other, bob, "other")
    other.wait_for_selector(f"{room_item('news')}[data-unread]", timeout=WAIT_MS)
    assert other.get_attribute(room_item("news"), "data-unread") == "0"
    assert [errors for _, errors in bob_pages] == [[], []]


def make_history(slug: str, author: Any, count: int) -> list[int]:
    """``count`` messages in a new room ``slug``, oldest first (ids increasing): their ids."""
    from chat.models import Message

    room = make_room(slug, author)
    Message.objects.bulk_create(
        Message(room=room, author=author, text=f"m{number:03d}") for number in range(count)
    )
    return list(room.messages.order_by("id").values_list("id", flat=True))


@pytest.mark.django_db(transaction=True)
def test_scrolling_up_pages_in_the_whole_history_in_order_and_keeps_the_view(
    daphne_server,
    alice,
    browser,  # noqa: F811
):
    ids = in_plain_thread(make_history, "long-history", alice, 120)
    page, errors = chat_page(browser, daphne_server, alice, "long-history")

    # The newest page (50), at the bottom; older pages only once scrolled up.
    assert page.get_attribute("#messages", "data-complete") == "false"
    assert page.locator("#messages li").count() == 50
    top_id = page.get_attribute("#messages li >> nth=0", "data-id")
    assert top_id == str(ids[70])

    # One page further back: what was at the top stays where it was on screen.
    offset = """(id) => {
        const list = document.getElementById("messages");
        const item = list.querySelector(`li[data-id="${id}"]`);
        return item.getBoundingClientRect().top - list.getBoundingClientRect().top;
    }"""
    page.evaluate("() => { document.getElementById('messages').scrollTop = 0; }")
    page.wait_for_function(
        "() => document.querySelectorAll('#messages li').length === 100", timeout=WAIT_MS
    )
    assert abs(page.evaluate(offset, top_id)) < 2  # still at the top of the list's view
    assert page.evaluate("() => document.getElementById('messages').scrollTop") > 0

    page.wait_for_function(SCROLL_TO_THE_START, polling=100, timeout=WAIT_MS)
    shown_ids = [
        int(i) for i in page.eval_on_selector_all("#messages li", "l => l.map(i => i.dataset.id)")
    ]
    assert shown_ids == ids
    texts = page.locator("#messages li .text").all_inner_texts()
    assert texts == [f"m{number:03d}" for number in range(120)]
    assert errors == []


@pytest.mark.django_db(transaction=True)
def test_new_room_needs_the_permission_lists_live_for_its_members_and_leaving_removes_it(
    daphne_server,
    bob,
    browser,  # noqa: F811
):
    maker = in_plain_thread(make_user, "maker", "chat.add_room")
    visitor = in_plain_thread(make_user, "visitor")
    visitor_page, visitor_errors = chat_page(browser, daphne_server, visitor)
    assert visitor_page.locator("#new-room").count() == 0
    bob_pages = [chat_page(browser, daphne_server, bob) for _ in range(2)]
    maker_page, maker_errors = chat_page(browser, daphne_server, maker)

    maker_page.click("#new-room-box summary")
    # The server's refusals are shown: no title.
    maker_page.click("#new-room button[type='submit']")
    maker_page.wait_for_function(
        "() => document.getElementById('new-room-error').textContent.includes('title')",
        timeout=WAIT_MS,
    )

    maker_page.fill("#new-room-title", "Plans")
    maker_page.fill("#new-room-q", "bob")
    found = f"#new-room-people[data-q='bob'] li[data-id='{bob.pk}']"
    maker_page.wait_for_selector(found, timeout=WAIT_MS)
    maker_page.click(f"{found} button[data-action='add']")
    maker_page.wait_for_selector(f"#new-room-members li[data-id='{bob.pk}']", timeout=WAIT_MS)
    maker_page.click("#new-room button[type='submit']")
    wait_history(maker_page, "plans")
    assert maker_page.inner_text("#room-title") == "Plans"
    assert maker_page.inner_text("#new-room-error") == ""
    assert maker_page.locator("#new-room-members li").count() == 0

    # Bob's pages list it live; he leaves it on one: gone from both, live.
    for page, _ in bob_pages:
        page.wait_for_selector(room_item("plans"), timeout=WAIT_MS)
    leaver, other = bob_pages[0][0], bob_pages[1][0]
    leaver.click(f"{room_item('plans')} button")
    wait_history(leaver, "plans")
    # The answer to Leave is held until the push has removed the room: the page still
    # says it was its own doing, whichever of the two arrives first.
    held: list[Any] = []
    leaver.route("**/leave", lambda route: held.append((route, route.fetch())))
    leaver.click("#leave")
    for page in (leaver, other):
        page.wait_for_selector(room_item("plans"), state="detached", timeout=WAIT_MS)
    assert leaver.inner_text("#notice") == "You left Plans"
    route, answer = held[0]
    route.fulfill(response=answer)
    leaver.wait_for_function("() => !document.querySelector('#leave').disabled")
    assert leaver.inner_text("#notice") == "You left Plans"
    assert leaver.inner_text("#room-title") == "Pick a room"
    assert leaver.is_disabled("#text")
    assert visitor_page.locator(room_item("plans")).count() == 0

    # An open room: every signed-in page lists it live; it has no Leave.
    maker_page.click("#new-room-box summary")
    maker_page.fill("#new-room-title", "Town")
    maker_page.check("#new-room-open")
    maker_page.click("#new-room button[type='submit']")
    wait_history(maker_page, "town")
    assert maker_page.is_hidden("#leave")
    visitor_page.wait_for_selector(room_item("town"), timeout=WAIT_MS)
    assert visitor_page.get_attribute(room_item("town"), "data-unread") == "0"
    assert visitor_errors == maker_errors == []
    assert [errors for _, errors in bob_pages] == [[], []]


def make_dated_messages(slug: str, author: Any) -> dict[str, tuple[int, datetime]]:
    """A room with a message from three days ago, a missed call and one from now."""
    from django.utils import timezone

    from chat.models import Message

    room = make_room(slug, author)
    old = Message.objects.create(room=room, author=author, text="from before")
    Message.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3))
    missed = Message.objects.create(
        room=room, author=author, text=f"Missed call from {author}", kind="missed_call"
    )
    new = Message.objects.create(room=room, author=author, text="just now")
    return {
        message.text: (message.pk, message.created_at)
        for message in Message.objects.filter(pk__in=[old.pk, missed.pk, new.pk])
    }


def shown_time(page: Any, message_id: int) -> tuple[str, str]:
    """The ``<time>`` of a message on the page: its datetime attribute and its text."""
    time = page.locator(f"#messages li[data-id='{message_id}'] time")
    return time.get_attribute("datetime"), time.inner_text()


@pytest.mark.django_db(transaction=True)
def test_each_message_shows_its_time_in_the_viewers_locale_and_time_zone(
    daphne_server,
    alice,
    browser,  # noqa: F811
):
    tokyo = ZoneInfo("Asia/Tokyo")
    messages = in_plain_thread(make_dated_messages, "times", alice)
    page, errors = chat_page(
        browser, daphne_server, alice, "times", locale="de-DE", timezone_id="Asia/Tokyo"
    )
    assert page.evaluate("() => Intl.DateTimeFormat().resolvedOptions().timeZone") == "Asia/Tokyo"

    def assert_shown(message_id: int, created_at: datetime) -> None:
        stamp, text = shown_time(page, message_id)
        assert datetime.fromisoformat(stamp) == created_at.replace(
            microsecond=created_at.microsecond // 1000 * 1000
        )
        local = created_at.astimezone(tokyo)
        hh_mm = local.strftime("%H:%M")
        if local.date() == datetime.now(tokyo).date():
            assert text == hh_mm
        else:
            assert text == f"{local:%d.%m.%Y}, {hh_mm}"

    # Today: the time alone, 24-hour as in German; three days ago: the date too.
    assert_shown(*messages["just now"])
    assert_shown(*messages["from before"])
    missed_id, missed_at = messages["Missed call from alice"]
    assert_shown(missed_id, missed_at)
    assert page.get_attribute(f"#messages li[data-id='{missed_id}']", "class") == "missed-call"
    assert page.locator("#messages li.missed-call").count() == 1

    # A message pushed while the page is open shows its time the same way.
    sent = in_plain_thread(send, alice, "times", "live one")
    page.wait_for_selector(f"#messages li[data-id='{sent.pk}'] time", timeout=WAIT_MS)
    assert_shown(sent.pk, sent.created_at)
    assert errors == []
