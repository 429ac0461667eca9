"""The chat page's call panel, driven in Chromium: open a page, start a call, read its audio."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.support.browser import signed_in_page

WAIT_MS = 15_000


def call_page(
    browser: Any, server: Any, user: Any, slug: str, **context_options: Any
) -> tuple[Any, list[str]]:
    page, errors = signed_in_page(browser, server, user, f"/chat/?room={slug}", **context_options)
    page.wait_for_selector("#state[data-state='open']", timeout=WAIT_MS)
    page.wait_for_selector(f"#call[data-room='{slug}'][data-phase='idle']", timeout=WAIT_MS)
    return page, errors


def members_room(slug: str, *users: Any) -> str:
    from chat.models import Room

    room = Room.objects.create(slug=slug, title=slug.title())
    room.members.add(*users)
    return room.slug


def direct_room_of(user_a: Any, user_b: Any) -> str:
    from chat.services import direct_room

    return direct_room(user_a, user_b).slug


def wait_for_phase(page: Any, phase: str) -> None:
    page.wait_for_selector(f"#call[data-phase='{phase}']", timeout=WAIT_MS)


def audio_bytes_in(page: Any) -> dict[str, int]:
    """Per peer of this page's call: inbound audio bytes so far (``getStats()``)."""
    stats = page.evaluate("() => chatCalls.stats()")
    return {peer: figures["bytesReceived"] for peer, figures in stats.items()}


def assert_audio_rising(page: Any, peers: int) -> None:
    """The page shows ``peers`` connections carrying audio; getStats() agrees, and keeps rising."""
    page.wait_for_function(
        """(peers) => {
            const shown = document.querySelectorAll("#call-peers li");
            const flowing = document.querySelectorAll("#call-peers li[data-audio='flowing']");
            return shown.length === peers && flowing.length === peers;
        }""",
        arg=peers,
        timeout=WAIT_MS,
    )
    before = audio_bytes_in(page)
    assert len(before) == peers
    assert all(received > 0 for received in before.values())
    page.wait_for_function(
        """async (before) => {
            const stats = await chatCalls.stats();
            return Object.keys(before).every((peer) => stats[peer].bytesReceived > before[peer]);
        }""",
        arg=before,
        timeout=WAIT_MS,
        polling=100,
    )


def connect_one_to_one(caller: Any, callee: Any) -> None:
    """``caller`` calls, ``callee`` accepts, and audio flows both ways."""
    caller.click("#call-start")
    wait_for_phase(callee, "incoming")
    callee.click("#call-accept")
    for page in (caller, callee):
        wait_for_phase(page, "in-call")
        assert_audio_rising(page, peers=1)


def peer_stats(page: Any) -> dict[str, dict[str, Any]]:
    """``chatCalls.stats()``: per peer id, its connection's state, audio bytes, restarts..."""
    return page.evaluate("() => chatCalls.stats()")


def record_peer_statuses(page: Any) -> None:
    """From now on, keep every status the page's peer chips show (``window.seenPeerStatuses``)."""
    page.evaluate(
        """() => {
            window.seenPeerStatuses = [];
            const chips = document.getElementById("call-peers");
            const note = () => chips.querySelectorAll("li").forEach(
                (li) => window.seenPeerStatuses.push(li.dataset.status));
            const what = {childList: true, subtree: true, attributes: true};
            new MutationObserver(note).observe(chips, what);
        }"""
    )


def connect_three(first: Any, second: Any, third: Any) -> None:
    """``first`` calls, ``second`` accepts, ``third`` joins the active call: every pair talks."""
    first.click("#call-start")
    for page in (second, third):
        wait_for_phase(page, "incoming")
    second.click("#call-accept")
    wait_for_phase(third, "incoming")
    third.wait_for_selector("#call-accept >> text=Join", timeout=WAIT_MS)
    third.click("#call-accept")
    for page in (first, second, third):
        assert_audio_rising(page, peers=2)


@dataclass
class OneToOne:
    """Two signed-in pages of a direct room, in a call with audio both ways."""

    alice: Any
    bob: Any
    slug: str
    users: list[Any]
    errors: list[list[str]]  # each page's uncaught errors: a test ends with [[], []]


def one_to_one_call(browser: Any, server: Any, prefix: str) -> OneToOne:
    """``<prefix>-alice`` calls ``<prefix>-bob`` in their direct room, and he accepts."""
    from tests.support.browser import in_plain_thread
    from tests.support.users import make_user

    users = [in_plain_thread(make_user, f"{prefix}-{name}") for name in ("alice", "bob")]
    slug = in_plain_thread(direct_room_of, *users)
    alice, alice_errors = call_page(browser, server, users[0], slug)
    bob, bob_errors = call_page(browser, server, users[1], slug)
    connect_one_to_one(alice, bob)
    return OneToOne(alice, bob, slug, users, [alice_errors, bob_errors])
