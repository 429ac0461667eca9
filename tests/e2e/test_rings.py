"""Rings on the chat page: they reach the callee wherever they are, and stop everywhere.

Real daphne, Redis, Celery worker (the ring timeout) and headless Chromium with a
fake microphone. A ring is an event on the callee's ``user.<id>``; its end
(cancelled, answered, declined, timed out) is another, sent to every page of theirs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.browser import in_plain_thread, media_browser  # noqa: F401
from tests.support.call_pages import (
    WAIT_MS,
    assert_audio_rising,
    call_page,
    direct_room_of,
    members_room,
    wait_for_phase,
)
from tests.support.users import make_user

pytestmark = [pytest.mark.media, pytest.mark.django_db(transaction=True)]

RING_SHOWN = "#ring:not([hidden])"
RING_TIMEOUT_S = 4

# Records the page's Notifications (shown while the tab is hidden) and whether each closed.
NOTIFICATIONS_SEEN = """
Object.defineProperty(document, "hidden", { get: () => window.pretendHidden === true });
window.shownNotifications = [];
window.Notification = class extends EventTarget {
  static permission = "granted";
  static requestPermission() { return Promise.resolve("granted"); }
  constructor(title, options) {
    super();
    this.record = { title, body: options.body, tag: options.tag, closed: false };
    window.shownNotifications.push(this.record);
  }
  close() { this.record.closed = true; }
};
"""


def ring_hidden_on(page: Any) -> bool:
    return page.is_hidden("#ring")


def wait_until_hidden(pages: list[Any], limit_s: float) -> float:
    """Seconds until ``#ring`` is hidden on every page; fails past ``limit_s``."""
    started = time.monotonic()
    for page in pages:
        page.wait_for_selector("#ring", state="hidden", timeout=limit_s * 1000)
    return time.monotonic() - started


@dataclass
class Ringing:
    """Alice on her direct conversation with Bob; Bob's pages on a room of his own."""

    slug: str
    alice: Any
    bob: Any
    alice_page: Any
    bob_pages: list[Any]
    errors: list[list[str]]


def alice_and_bob_elsewhere(browser: Any, server: Any, prefix: str, bob_pages: int = 1) -> Ringing:
    alice, bob = (in_plain_thread(make_user, f"{prefix}-{name}") for name in ("alice", "bob"))
    slug = in_plain_thread(direct_room_of, alice, bob)
    elsewhere = in_plain_thread(members_room, f"{prefix}-elsewhere", bob)
    alice_page, alice_errors = call_page(browser, server, alice, slug)
    opened = [call_page(browser, server, bob, elsewhere) for _ in range(bob_pages)]
    return Ringing(
        slug,
        alice,
        bob,
        alice_page,
        [page for page, _ in opened],
        [alice_errors, *(errors for _, errors in opened)],
    )


def test_a_ring_reaches_every_page_of_the_callee_and_stops_on_all_when_the_caller_cancels(
    daphne_server,
    media_browser,  # noqa: F811
):
    ringing = alice_and_bob_elsewhere(media_browser, daphne_server, "cancel", bob_pages=2)
    alice_page, bob_pages = ringing.alice_page, ringing.bob_pages

    alice_page.click("#call-start")
    for page in bob_pages:
        page.wait_for_selector(RING_SHOWN, timeout=WAIT_MS)
        assert page.inner_text("#ring-text") == "cancel-alice is calling"
        assert page.evaluate("() => chatCalls.rings().tone")  # the Web Audio ringtone plays
    wait_for_phase(alice_page, "ringing")

    alice_page.click("#call-hangup")  # before anyone answered: a cancel
    took = wait_until_hidden(bob_pages, limit_s=1)
    assert took < 1
    for page in bob_pages:
        assert page.evaluate("() => chatCalls.rings()")["calls"] == []
        assert not page.evaluate("() => chatCalls.rings().tone")
    assert ringing.errors == [[], [], []]


def test_answering_from_one_page_stops_the_ring_on_the_others_and_audio_flows(
    daphne_server,
    media_browser,  # noqa: F811
):
    ringing = alice_and_bob_elsewhere(media_browser, daphne_server, "answer", bob_pages=2)
    alice_page, (bob_page, other_page), slug = ringing.alice_page, ringing.bob_pages, ringing.slug

    alice_page.click("#call-start")
    for page in (bob_page, other_page):
        page.wait_for_selector(RING_SHOWN, timeout=WAIT_MS)
    bob_page.click("#ring-accept")  # from another room: it opens the call's room and joins
    bob_page.wait_for_selector(f"#call[data-room='{slug}'][data-phase='in-call']", timeout=WAIT_MS)
    wait_until_hidden([other_page], limit_s=5)
    for page in (alice_page, bob_page):
        assert_audio_rising(page, peers=1)
    assert other_page.evaluate("() => chatCalls.rings().calls") == []
    assert ringing.errors == [[], [], []]


def test_declining_from_the_ring_ends_the_call_for_the_caller(
    daphne_server,
    media_browser,  # noqa: F811
):
    ringing = alice_and_bob_elsewhere(media_browser, daphne_server, "no")
    alice_page, (bob_page,) = ringing.alice_page, ringing.bob_pages

    alice_page.click("#call-start")
    bob_page.wait_for_selector(RING_SHOWN, timeout=WAIT_MS)
    bob_page.click("#ring-decline")
    alice_page.wait_for_selector("#call-status[data-ended='declined']", timeout=WAIT_MS)
    assert ring_hidden_on(bob_page)
    assert bob_page.inner_text("#room-title") == "No-Elsewhere"  # he stayed where he was
    assert ringing.errors == [[], []]


@pytest.fixture
def quick_ring_server(server_factory) -> Any:
    """daphne whose calls stop ringing after RING_TIMEOUT_S."""
    return server_factory.start("daphne", CALL_RING_TIMEOUT_S=str(RING_TIMEOUT_S))


def test_an_unanswered_call_leaves_a_missed_call_message_on_both_pages_and_in_the_list(
    quick_ring_server,
    celery_worker,  # runs the ring's timeout
    media_browser,  # noqa: F811
):
    alice, bob = (in_plain_thread(make_user, name) for name in ("miss-alice", "miss-bob"))
    slug = in_plain_thread(direct_room_of, alice, bob)
    alice_page, alice_errors = call_page(media_browser, quick_ring_server, alice, slug)
    bob_page, bob_errors = call_page(media_browser, quick_ring_server, bob, slug)

    alice_page.click("#call-start")
    wait_for_phase(bob_page, "incoming")
    for page in (alice_page, bob_page):
        page.wait_for_selector("#messages li.missed-call", timeout=(RING_TIMEOUT_S + 10) * 1000)
        assert "Missed call from miss-alice" in page.inner_text("#messages li.missed-call")
        wait_for_phase(page, "idle")
    missed = bob_page.evaluate(
        """async () => (await (await fetch("/chat/api/calls?missed=1")).json()).calls"""
    )
    assert [(call["room"], call["from"]["name"], call["reason"]) for call in missed] == [
        (slug, "miss-alice", "unanswered")
    ]
    assert alice_errors == bob_errors == []


def test_a_hidden_tab_shows_a_notification_that_closes_with_the_ring(
    daphne_server,
    media_browser,  # noqa: F811
):
    ringing = alice_and_bob_elsewhere(media_browser, daphne_server, "note")
    alice_page, (bob_page,) = ringing.alice_page, ringing.bob_pages
    bob_page.add_init_script(NOTIFICATIONS_SEEN)
    bob_page.reload()
    bob_page.wait_for_selector("#state[data-state='open']", timeout=WAIT_MS)
    bob_page.evaluate("() => { window.pretendHidden = true; }")

    alice_page.click("#call-start")
    bob_page.wait_for_function("() => window.shownNotifications.length === 1", timeout=WAIT_MS)
    (shown,) = bob_page.evaluate("() => window.shownNotifications")
    assert (shown["title"], shown["body"], shown["closed"]) == (
        "note-alice is calling",
        "Voice call",
        False,
    )
    alice_page.click("#call-hangup")
    bob_page.wait_for_function("() => window.shownNotifications[0].closed", timeout=WAIT_MS)
    assert ringing.errors == [[], []]


def test_an_open_room_rings_only_those_who_asked_and_a_non_member_is_never_rung(
    daphne_server,
    media_browser,  # noqa: F811
):
    alice, bob, carol = (
        in_plain_thread(make_user, name) for name in ("open-alice", "open-bob", "open-carol")
    )
    in_plain_thread(open_room, "open-hall")
    team = in_plain_thread(members_room, "open-team", alice, bob)
    carols_own = in_plain_thread(members_room, "open-carols", carol)
    alice_page, alice_errors = call_page(media_browser, daphne_server, alice, "open-hall")
    bob_page, bob_errors = call_page(media_browser, daphne_server, bob, "open-hall")
    carol_page, carol_errors = call_page(media_browser, daphne_server, carol, carols_own)

    # Bob asks the open room to ring him, then looks elsewhere; Carol never asked.
    bob_page.check("#ring-me")
    bob_page.wait_for_function(
        "async () => (await (await fetch('/chat/api/rooms')).json()).rooms"
        ".find((room) => room.slug === 'open-hall').ring === true",
        timeout=WAIT_MS,
    )
    bob_page.goto(daphne_server.http_url(f"/chat/?room={team}"))
    bob_page.wait_for_selector(f"#call[data-room='{team}'][data-phase='idle']", timeout=WAIT_MS)

    alice_page.click("#call-start")
    bob_page.wait_for_selector(RING_SHOWN, timeout=WAIT_MS)
    assert bob_page.inner_text("#ring-text") == "open-alice is calling in Open-Hall"
    # Carol's page is subscribed to her own user.<id> like Bob's: by now a ring would have come.
    ringing_for_carol = carol_page.evaluate(
        """async () => (await (await fetch("/chat/api/calls?ringing=1")).json()).calls"""
    )
    assert ringing_for_carol == []
    assert ring_hidden_on(carol_page)
    assert carol_page.evaluate("() => chatCalls.rings().calls") == []

    # A call in the members-only room rings its member Bob, never Carol.
    alice_page.click("#call-hangup")
    wait_until_hidden([bob_page], limit_s=5)
    alice_page.goto(daphne_server.http_url(f"/chat/?room={team}"))
    alice_page.wait_for_selector(f"#call[data-room='{team}'][data-phase='idle']", timeout=WAIT_MS)
    bob_page.goto(daphne_server.http_url("/chat/?room=open-hall"))
    bob_page.wait_for_selector("#call[data-room='open-hall'][data-phase='idle']", timeout=WAIT_MS)
    alice_page.click("#call-start")
    bob_page.wait_for_selector(RING_SHOWN, timeout=WAIT_MS)
    assert ring_hidden_on(carol_page)
    assert carol_page.evaluate("() => chatCalls.rings().calls") == []
    assert alice_errors == bob_errors == carol_errors == []


def open_room(slug: str) -> str:
    from chat.models import Room

    return Room.objects.create(slug=slug, title=slug.title(), open_to_signed_in=True).slug
