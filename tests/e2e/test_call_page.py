"""Voice calls on the chat page in headless Chromium with a fake microphone.

Each page is a signed-in user; the server relays the signalling, and the audio
goes page to page over WebRTC. "Audio flowing" is read from each peer
connection's ``getStats()``: its inbound audio bytes keep rising.
"""

from __future__ import annotations

import pytest

from tests.support.browser import in_plain_thread, media_browser  # noqa: F401
from tests.support.call_pages import (
    WAIT_MS,
    assert_audio_rising,
    call_page,
    connect_three,
    direct_room_of,
    members_room,
    wait_for_phase,
)
from tests.support.users import make_user

pytestmark = pytest.mark.media


@pytest.mark.django_db(transaction=True)
def test_a_one_to_one_call_carries_audio_both_ways_and_hang_up_ends_it_on_both_pages(
    daphne_server,
    media_browser,  # noqa: F811
):
    alice, bob = in_plain_thread(make_user, "call-alice"), in_plain_thread(make_user, "call-bob")
    slug = in_plain_thread(direct_room_of, alice, bob)
    alice_page, alice_errors = call_page(media_browser, daphne_server, alice, slug)
    bob_page, bob_errors = call_page(media_browser, daphne_server, bob, slug)

    alice_page.click("#call-start")
    wait_for_phase(alice_page, "ringing")
    wait_for_phase(bob_page, "incoming")
    assert bob_page.inner_text("#call-status") == "call-alice calling…"
    assert bob_page.is_visible("#call-decline")

    bob_page.click("#call-accept")
    for page in (alice_page, bob_page):
        wait_for_phase(page, "in-call")
        assert_audio_rising(page, peers=1)
    assert alice_page.inner_text("#call-status") == "In a call with call-bob"

    # Mute: Alice's outgoing track is disabled (the fake microphone sends silence).
    alice_page.click("#call-mute")
    assert alice_page.get_attribute("#call-mute", "aria-pressed") == "true"
    assert alice_page.evaluate("() => document.getElementById('call-mute').textContent") == "Unmute"

    alice_page.click("#call-hangup")
    for page in (alice_page, bob_page):
        wait_for_phase(page, "idle")
        assert page.locator("#call-peers li").count() == 0
    bob_page.wait_for_selector("#call-status[data-ended='hung_up']", timeout=WAIT_MS)
    assert bob_page.inner_text("#call-status") == "Call ended: call ended"
    assert alice_errors == bob_errors == []


@pytest.mark.django_db(transaction=True)
def test_a_three_person_call_connects_every_pair_and_ends_when_all_but_one_hang_up(
    daphne_server,
    media_browser,  # noqa: F811
):
    users = [in_plain_thread(make_user, f"trio-{name}") for name in ("ann", "ben", "cat")]
    slug = in_plain_thread(members_room, "trio-room", *users)
    (ann, ann_errors), (ben, ben_errors), (cat, cat_errors) = (
        call_page(media_browser, daphne_server, user, slug) for user in users
    )

    # Three pairs: each page has two peer connections, both carrying audio.
    connect_three(ann, ben, cat)
    peer_names = {
        name: sorted(page.locator("#call-peers li").all_inner_texts())
        for name, page in (("ann", ann), ("ben", ben), ("cat", cat))
    }
    assert peer_names == {
        "ann": ["trio-ben · audio", "trio-cat · audio"],
        "ben": ["trio-ann · audio", "trio-cat · audio"],
        "cat": ["trio-ann · audio", "trio-ben · audio"],
    }

    # Ann leaves: Ben and Cat still talk to each other.
    ann.click("#call-hangup")
    wait_for_phase(ann, "incoming")  # the call goes on without her: she may join again
    for page in (ben, cat):
        page.wait_for_function(
            "() => document.querySelectorAll('#call-peers li').length === 1", timeout=WAIT_MS
        )
        assert_audio_rising(page, peers=1)

    # Ben leaves: fewer than two, so the call ends on every page.
    ben.click("#call-hangup")
    for page in (ann, ben, cat):
        wait_for_phase(page, "idle")
    cat.wait_for_selector("#call-status[data-ended='hung_up']", timeout=WAIT_MS)
    assert ann_errors == ben_errors == cat_errors == []


@pytest.mark.django_db(transaction=True)
def test_declining_ends_a_ringing_one_to_one_call_on_the_callers_page(
    daphne_server,
    media_browser,  # noqa: F811
):
    alice, bob = in_plain_thread(make_user, "no-alice"), in_plain_thread(make_user, "no-bob")
    slug = in_plain_thread(direct_room_of, alice, bob)
    alice_page, alice_errors = call_page(media_browser, daphne_server, alice, slug)
    bob_page, bob_errors = call_page(media_browser, daphne_server, bob, slug)

    alice_page.click("#call-start")
    wait_for_phase(bob_page, "incoming")
    bob_page.click("#call-decline")
    for page in (alice_page, bob_page):
        wait_for_phase(page, "idle")
    alice_page.wait_for_selector("#call-status[data-ended='declined']", timeout=WAIT_MS)
    assert alice_page.inner_text("#call-status") == "Call ended: declined"
    assert alice_errors == bob_errors == []


@pytest.mark.django_db(transaction=True)
def test_a_call_rings_on_a_page_showing_another_room_and_a_closed_page_leaves_the_call(
    daphne_server,
    celery_worker,  # ends the closed page's grace period
    media_browser,  # noqa: F811
):
    alice, bob = in_plain_thread(make_user, "ring-alice"), in_plain_thread(make_user, "ring-bob")
    slug = in_plain_thread(members_room, "ring-room", alice, bob)
    in_plain_thread(members_room, "elsewhere", bob)
    alice_page, alice_errors = call_page(media_browser, daphne_server, alice, slug)
    bob_page, bob_errors = call_page(media_browser, daphne_server, bob, "elsewhere")

    # Bob looks at another room: the ring (on his user.<id>) says who calls and where, and
    # answering it opens that room and joins the call.
    alice_page.click("#call-start")
    bob_page.wait_for_selector("#ring:not([hidden])", timeout=WAIT_MS)
    assert bob_page.inner_text("#ring-text") == "ring-alice is calling in Ring-Room"
    bob_page.click("#ring-accept")
    bob_page.wait_for_selector(f"#call[data-room='{slug}'][data-phase='in-call']", timeout=WAIT_MS)
    assert bob_page.inner_text("#room-title") == "Ring-Room"
    assert bob_page.is_hidden("#ring")
    assert_audio_rising(alice_page, peers=1)

    # Bob's page goes away (tab closed): once his grace period is over the server takes him
    # out, and Alice's call ends.
    bob_page.context.close()
    alice_page.wait_for_selector(
        "#call-peers li[data-status='reconnecting']", timeout=WAIT_MS
    )  # for all Alice knows, his page may be reloading
    assert alice_page.inner_text("#call-peers li") == "ring-bob · reconnecting"
    wait_for_phase(alice_page, "idle")
    alice_page.wait_for_selector("#call-status[data-ended='disconnected']", timeout=WAIT_MS)
    assert alice_page.inner_text("#call-status") == "Call ended: the other side left"
    assert alice_errors == bob_errors == []


@pytest.mark.django_db(transaction=True)
@pytest.mark.serial  # six browsers in a full mesh: alone it takes 20 s, beside others 100
def test_six_people_connect_every_pair_and_a_seventh_is_told_the_call_is_full(
    daphne_server,
    media_browser,  # noqa: F811
):
    users = [in_plain_thread(make_user, f"six-{n}") for n in range(7)]
    slug = in_plain_thread(members_room, "six-room", *users)
    pages = [call_page(media_browser, daphne_server, user, slug) for user in users]
    six, seventh = [page for page, _ in pages[:6]], pages[6][0]

    six[0].click("#call-start")
    for page in six[1:]:
        wait_for_phase(page, "incoming")
        page.click("#call-accept")
        wait_for_phase(page, "in-call")
    for page in six:
        assert_audio_rising(page, peers=5)

    wait_for_phase(seventh, "incoming")
    seventh.click("#call-accept")
    seventh.wait_for_selector("#call-error >> text=the call is full (6 participants)")
    wait_for_phase(seventh, "incoming")  # not in the call, and may try again later

    for page in six[:5]:  # the last one left alone: the call ends everywhere
        page.click("#call-hangup")
    for page, errors in pages:
        wait_for_phase(page, "idle")
        assert errors == []


@pytest.mark.django_db(transaction=True)
def test_a_users_other_window_says_they_are_in_the_call_and_takes_no_part(
    daphne_server,
    media_browser,  # noqa: F811
):
    alice, bob = in_plain_thread(make_user, "two-alice"), in_plain_thread(make_user, "two-bob")
    slug = in_plain_thread(direct_room_of, alice, bob)
    (calling, calling_errors), (other, other_errors), (bob_page, bob_errors) = (
        call_page(media_browser, daphne_server, user, slug) for user in (alice, alice, bob)
    )

    calling.click("#call-start")
    wait_for_phase(other, "elsewhere")
    assert other.inner_text("#call-status") == "You are in this call in another window"
    assert other.is_hidden("#call-start")
    assert other.is_hidden("#call-accept")
    bob_page.click("#call-accept")
    assert_audio_rising(calling, peers=1)  # the offer and answer went to the window in the call
    assert other.locator("#call-peers li").count() == 0

    calling.click("#call-hangup")
    for page in (calling, other, bob_page):
        wait_for_phase(page, "idle")
    assert calling_errors == other_errors == bob_errors == []
