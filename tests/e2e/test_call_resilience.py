"""Calls that survive what real networks do, in headless Chromium with a fake microphone.

A reload, a socket cut from the server side, UDP dropped for seconds, and a
relay-only call through a real TURN server (coturn) whose credentials expire:
after each, audio flows both ways again with no press on either page. Faults
are made for real (``ss -K`` on the server's side of a socket, nftables rules
on UDP), on this machine only.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.support.browser import in_plain_thread, media_browser  # noqa: F401
from tests.support.call_pages import (
    WAIT_MS,
    assert_audio_rising,
    call_page,
    connect_one_to_one,
    connect_three,
    direct_room_of,
    members_room,
    one_to_one_call,
    peer_stats,
    record_peer_statuses,
    wait_for_phase,
)
from tests.support.netfault import cut_connections, established_client_ports
from tests.support.turn import turn_server  # noqa: F401
from tests.support.users import make_user
from tests.support.waiting import poll_until

# faults: nftables drops UDP for the whole machine, so these run alone (see Makefile).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.media, pytest.mark.faults]


def live_call(slug: str) -> tuple[int, str, list[str]]:
    """The room's live call: its id, state and who is in it (from the database)."""
    from chat.models import Call

    call = Call.objects.filter(room__slug=slug, state__in=["ringing", "active"]).get()
    in_call = call.participants.filter(joined_at__isnull=False, left_at__isnull=True)
    return call.pk, call.state, sorted(part.user.username for part in in_call)


def users(*names: str) -> list[Any]:
    return [in_plain_thread(make_user, name) for name in names]


def test_a_reloaded_page_is_back_in_its_one_to_one_call_with_audio_both_ways(
    daphne_server,
    media_browser,  # noqa: F811
):
    call = one_to_one_call(media_browser, daphne_server, "reload")
    alice_page, bob_page = call.alice, call.bob
    before = in_plain_thread(live_call, call.slug)

    reloaded_at = time.monotonic()
    bob_page.reload()
    for page in (alice_page, bob_page):
        wait_for_phase(page, "in-call")
        assert_audio_rising(page, peers=1)
    assert time.monotonic() - reloaded_at < 10
    assert in_plain_thread(live_call, call.slug) == before  # the same call, never ended
    # The reloaded page offered and Alice answered: one new connection each, no glare.
    (alice_side,) = peer_stats(alice_page).values()
    assert (alice_side["state"], alice_side["restarts"]) == ("connected", 0)
    assert alice_page.inner_text("#call-status") == "In a call with reload-bob"
    assert call.errors == [[], []]


def test_in_a_three_person_call_a_reload_leaves_the_other_two_connected_throughout(
    daphne_server,
    media_browser,  # noqa: F811
):
    trio = users("reload3-ann", "reload3-ben", "reload3-cat")
    slug = in_plain_thread(members_room, "reload-trio", *trio)
    (ann, ann_errors), (ben, ben_errors), (cat, cat_errors) = (
        call_page(media_browser, daphne_server, user, slug) for user in trio
    )
    connect_three(ann, ben, cat)
    ann_id, cat_id = str(trio[0].pk), str(trio[2].pk)
    ann_to_cat, cat_to_ann = peer_stats(ann)[cat_id], peer_stats(cat)[ann_id]

    ben.reload()
    wait_for_phase(ben, "in-call")
    for page in (ann, ben, cat):
        assert_audio_rising(page, peers=2)
    # Ann and Cat kept the connection they had (same one, bytes still counting up).
    for page, peer, then in ((ann, cat_id, ann_to_cat), (cat, ann_id, cat_to_ann)):
        now = peer_stats(page)[peer]
        assert now["createdAt"] == then["createdAt"]
        assert now["bytesReceived"] > then["bytesReceived"]
    assert ann_errors == ben_errors == cat_errors == []


def test_a_socket_cut_from_the_server_side_leaves_the_call_and_its_audio_untouched(
    daphne_server,
    media_browser,  # noqa: F811
):
    alice, bob = users("blip-alice", "blip-bob")
    slug = in_plain_thread(direct_room_of, alice, bob)
    alice_page, alice_errors = call_page(media_browser, daphne_server, alice, slug)
    alices = established_client_ports(daphne_server.port)
    bob_page, bob_errors = call_page(media_browser, daphne_server, bob, slug)
    bobs = established_client_ports(daphne_server.port) - alices  # his page's socket among them
    connect_one_to_one(alice_page, bob_page)
    (alice_hears,) = peer_stats(alice_page).values()
    record_peer_statuses(alice_page)

    cut_connections(daphne_server.port, bobs)
    bob_page.wait_for_selector("#state[data-state='reconnecting']", timeout=WAIT_MS)
    alice_page.wait_for_function(
        """() => window.seenPeerStatuses.includes("reconnecting")
            && document.querySelector("#call-peers li").dataset.status === "in_call" """,
        timeout=WAIT_MS,
    )
    assert alice_page.inner_text("#call-peers li") == "blip-bob · audio"
    for page in (alice_page, bob_page):
        wait_for_phase(page, "in-call")
        assert_audio_rising(page, peers=1)
    # Media never noticed: the same connection, no ICE restart, bytes counting on.
    (now,) = peer_stats(alice_page).values()
    assert (now["createdAt"], now["restarts"]) == (alice_hears["createdAt"], 0)
    assert now["bytesReceived"] > alice_hears["bytesReceived"]
    assert in_plain_thread(live_call, slug)[1:] == ("active", ["blip-alice", "blip-bob"])
    assert alice_errors == bob_errors == []


# --- the network itself: UDP lost for seconds, TURN -------------------------------------

# While the fault holds: some connection of the page is down and has tried an ICE restart.
RESTARTED_WHILE_DOWN = """async () => Object.values(await chatCalls.stats()).some(
    (peer) => ["disconnected", "failed", "checking"].includes(peer.ice) && peer.restarts > 0)"""


def hold_fault_until_restarted(*pages: Any) -> None:
    """Keep the fault on until one of ``pages`` saw its ICE go down and restarted it."""
    deadline = time.monotonic() + 30
    while not any(page.evaluate(RESTARTED_WHILE_DOWN) for page in pages):
        assert time.monotonic() < deadline, "no ICE restart while the network was down"
        pages[0].wait_for_timeout(200)  # the pages' own timers run meanwhile


@pytest.mark.serial  # drops the machine's UDP
def test_audio_comes_back_by_itself_after_the_calls_udp_was_dropped(
    daphne_server,
    media_browser,  # noqa: F811
):
    from tests.support.netfault import udp_blocked

    call = one_to_one_call(media_browser, daphne_server, "fault")
    alice_page, bob_page = call.alice, call.bob

    with udp_blocked():  # every UDP packet on this machine: no path works at all
        hold_fault_until_restarted(alice_page, bob_page)
    healed_by = time.monotonic() + 15
    for page in (alice_page, bob_page):
        assert_audio_rising(page, peers=1)
    assert time.monotonic() < healed_by
    assert in_plain_thread(live_call, call.slug)[1:] == ("active", ["fault-alice", "fault-bob"])
    assert call.errors == [[], []]


@pytest.fixture
def impatient_server(server_factory):
    """daphne whose pages give up on a connection 2 s after it went down."""
    return server_factory.start("daphne", CALL_PEER_GIVE_UP_S="2")


@pytest.mark.serial  # drops the machine's UDP
def test_a_connection_that_cannot_come_back_is_shown_lost_on_both_pages(
    impatient_server,
    media_browser,  # noqa: F811
):
    from tests.support.netfault import udp_blocked

    call = one_to_one_call(media_browser, impatient_server, "lost")
    with udp_blocked():
        for page in (call.alice, call.bob):
            page.wait_for_selector("#call-peers li[data-state='lost']", timeout=30_000)
    # Given up for good: both still in the call, the link shown lost, no connection left.
    for page, other in ((call.alice, "lost-bob"), (call.bob, "lost-alice")):
        assert page.inner_text("#call-peers li") == f"{other} · lost"
        assert peer_stats(page) == {}
        wait_for_phase(page, "in-call")
    assert in_plain_thread(live_call, call.slug)[1:] == ("active", ["lost-alice", "lost-bob"])
    assert in_plain_thread(lost_links, call.slug) == [sorted(user.pk for user in call.users)]
    assert call.errors == [[], []]


def lost_links(slug: str) -> list[list[int]]:
    from chat.models import Call

    return Call.objects.get(room__slug=slug, state="active").lost_links


TURN_TTL_S = 3


@pytest.fixture
def relay_server(server_factory, turn_server):  # noqa: F811
    """uvicorn whose pages may only use TURN (coturn), with credentials for TURN_TTL_S."""
    return server_factory.start(
        "uvicorn",
        CALL_TURN_URLS=turn_server.url,
        CALL_TURN_SECRET=turn_server.secret,
        CALL_TURN_TTL_S=str(TURN_TTL_S),
        CALL_ICE_TRANSPORT_POLICY="relay",
    )


def turn_expiry(page: Any) -> int:
    """When the TURN credential the page fetched last expires (Unix seconds)."""
    ice = page.evaluate("() => chatCalls.ice()")
    (turn,) = [server for server in ice["config"]["iceServers"] if "username" in server]
    assert ice["config"]["iceTransportPolicy"] == "relay"
    return int(turn["username"].split(":")[0])


def assert_relayed(page: Any) -> None:
    for peer in peer_stats(page).values():
        assert (peer["pair"]["local"]["type"], peer["pair"]["remote"]["type"]) == ("relay", "relay")


@pytest.mark.serial  # drops the machine's UDP
def test_a_relay_only_call_goes_through_turn_and_an_ice_restart_gets_a_fresh_credential(
    relay_server,
    turn_server,  # noqa: F811
    media_browser,  # noqa: F811
):
    from tests.support.netfault import udp_blocked

    call = one_to_one_call(media_browser, relay_server, "relay")
    alice_page, bob_page = call.alice, call.bob
    for page in (alice_page, bob_page):
        assert_relayed(page)
    assert {name.split(":")[1] for name in turn_server.allocations()} >= {
        str(user.pk) for user in call.users
    }

    # Both credentials run out; coturn would refuse them for a new allocation now.
    first = max(turn_expiry(alice_page), turn_expiry(bob_page))
    while time.time() <= first:
        alice_page.wait_for_timeout(250)
    with udp_blocked():
        hold_fault_until_restarted(alice_page, bob_page)
    for page in (alice_page, bob_page):
        assert_audio_rising(page, peers=1)
        assert_relayed(page)
    # A restart made during the fault may not have got its allocation (its ALLOCATE was
    # dropped too) while the old relayed pair came back. One made now must allocate: only
    # Alice restarts, so Bob's answer needs the credential his page renewed by itself.
    before = len(turn_server.allocations())
    alice_page.evaluate(RESTART_AT, alice_page.evaluate("() => Date.now()"))
    alice_page.wait_for_function("() => window.restartsDone === 1", timeout=WAIT_MS)

    def fresh_allocations() -> set[str]:
        return {
            user_id
            for expiry, user_id in (name.split(":") for name in turn_server.allocations()[before:])
            if int(expiry) > first
        }

    poll_until(
        lambda: fresh_allocations() >= {str(user.pk) for user in call.users},
        WAIT_MS / 1000,
        "allocation for each side with a credential made after the first expired",
    )
    for page in (alice_page, bob_page):
        assert_audio_rising(page, peers=1)
        assert_relayed(page)
    assert call.errors == [[], []]


def test_both_sides_restarting_ice_at_once_settle_without_a_deadlock(
    daphne_server,
    media_browser,  # noqa: F811
):
    """Perfect negotiation: Alice joined first (impolite), Bob is polite and rolls back."""
    call = one_to_one_call(media_browser, daphne_server, "glare")
    pages = (call.alice, call.bob)
    for round_ in range(1, 4):
        # Both pages restart at the same instant of the clock they share: two offers cross.
        at = call.alice.evaluate("() => Date.now() + 300")
        for page in pages:
            page.evaluate(RESTART_AT, at)
        for page in pages:
            page.wait_for_function("(n) => window.restartsDone === n", arg=round_, timeout=WAIT_MS)
        for page in pages:
            assert_audio_rising(page, peers=1)
        (alice_side,), (bob_side,) = (peer_stats(page).values() for page in pages)
        assert (alice_side["restarts"], bob_side["restarts"]) == (round_, round_)
        assert alice_side["rollbacks"] == 0  # the impolite side never gives way
    assert bob_side["rollbacks"] >= 1, "the two offers never crossed"
    assert call.errors == [[], []]


# At ``at`` (ms, the page's clock): restart every connection's ICE; count it when done.
RESTART_AT = """(at) => setTimeout(async () => {
    await chatCalls.restartIce();
    window.restartsDone = (window.restartsDone || 0) + 1;
}, at - Date.now())"""
