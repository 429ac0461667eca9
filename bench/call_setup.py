"""Time from accepting a voice call to audio flowing both ways, in Chromium.

A stack of its own (a throwaway Redis, a fresh SQLite database, the web server
as the project deploys it: uvicorn, one per mode), two users in a members-only
room, and headless Chromium (Debian's ``chromium``) with a fake microphone and
a chat page for each. Each round, Alice's page presses Call; once Bob's page shows the
call ringing, it notes ``Date.now()`` and presses Accept (his microphone opens,
the server joins him and tells him to offer, the offer, answer and ICE
candidates cross the server, the peers connect). Each page then notes when its
peer connection's ``getStats()`` first shows inbound audio bytes. Alice hangs up
and the next round begins. Both pages read the same clock.

``--ice host``: the pages connect on their host candidates. ``--ice relay``: a
stack of its own whose server hands pages a real TURN server (Debian's coturn on
127.0.0.1, TURN REST credentials) and ``iceTransportPolicy: "relay"``, so all
audio goes through coturn; each call checks that both pages' selected candidate
pair is relay/relay and counts the calls where it was not. ``--ice both``
(the default) runs host, then relay.

Prints one JSON line: ``{"bench": "call_setup", "calls": N, "p50_ms": ..., "p99_ms":
..., "max_ms": ..., "callee_hears": {...}, "caller_hears": {...}, "relay": {"calls":
N, "p50_ms": ..., "not_relayed": 0, ...}, ...}``, where the latencies are accept to
audio flowing both ways (the later of the two pages), with each direction's
figures beside them; host mode's at the top level, relay mode's under
``relay``. Without chromium (or, for relay, coturn) it prints ``{"bench":
"call_setup", "skipped": "<why>"}`` and exits 0.

    .venv/bin/python bench/call_setup.py --calls 50 --ice both
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.chat_pages import (  # noqa: E402
    call_ready,
    launch_call_browser,
    missing_for_calls,
    open_chat,
    users_in_room,
)
from bench.common import Stack, emit, latency_figures, note  # noqa: E402
from tests.support.processes import WebServer  # noqa: E402

ROOM = "bench-call"
WAIT_MS = 30_000

# On each page: from now on, note when every peer connection has received audio.
WATCH_AUDIO = """() => {
  window.audioAt = null;
  const timer = setInterval(async () => {
    const peers = Object.values(await chatCalls.stats());
    if (audioAt === null && peers.length && peers.every((peer) => peer.bytesReceived > 0)) {
      audioAt = Date.now();
      clearInterval(timer);
    }
  }, 5);
}"""

ACCEPT = """() => {
  const acceptedAt = Date.now();
  document.getElementById("call-accept").click();
  return acceptedAt;
}"""

# The types of the selected candidate pair of each of the page's connections.
PAIR_TYPES = """async () => Object.values(await chatCalls.stats()).map(
  (peer) => peer.pair && peer.pair.local && peer.pair.remote
    ? [peer.pair.local.type, peer.pair.remote.type] : null)"""


def relayed(page: Any) -> bool:
    """Whether every connection of the page sends and receives through TURN (relay/relay)."""
    pairs = page.evaluate(PAIR_TYPES)
    return bool(pairs) and all(pair == ["relay", "relay"] for pair in pairs)


def one_call(alice: Any, bob: Any, check_relay: bool) -> tuple[float, float, bool]:
    """One call: ms from Bob's accept to audio on (Alice's page, Bob's page), and whether
    both pages' pairs were relay/relay (True when ``check_relay`` is off)."""
    alice.click("#call-start")
    bob.wait_for_selector("#call[data-phase='incoming']", timeout=WAIT_MS)
    for page in (alice, bob):
        page.evaluate(WATCH_AUDIO)
    accepted_at = bob.evaluate(ACCEPT)
    heard = []
    for page in (alice, bob):
        page.wait_for_function("() => audioAt !== null", timeout=WAIT_MS)
        heard.append(page.evaluate("() => audioAt") - accepted_at)
    through_turn = not check_relay or (relayed(alice) and relayed(bob))
    alice.click("#call-hangup")
    for page in (alice, bob):
        page.wait_for_selector("#call[data-phase='idle']", timeout=WAIT_MS)
    return heard[0], heard[1], through_turn


def call_server(stack: Stack, ice: str, cleanup: contextlib.ExitStack) -> WebServer:
    """A uvicorn on ``stack`` for ``ice`` mode; for relay, with a coturn of its own (its
    log in the stack's directory) that the server's pages must use."""
    if ice == "host":
        return stack.add_server("uvicorn-host")
    from tests.support.turn import TurnServer

    turn = TurnServer.start(stack.directory)
    cleanup.callback(turn.stop)
    env = {
        "CALL_TURN_URLS": turn.url,
        "CALL_TURN_SECRET": turn.secret,
        "CALL_ICE_TRANSPORT_POLICY": "relay",
    }
    return stack.add_server("uvicorn-relay", env)


def run_mode(playwright: Any, server: WebServer, ice: str, calls: int) -> dict[str, Any]:
    """``calls`` calls between two pages of ``server`` (``ice``: host or relay); their figures."""
    room = f"{ROOM}-{ice}"
    # In a thread: Playwright's sync API keeps an event loop in this one.
    with ThreadPoolExecutor(max_workers=1) as orm:
        alice_cookie, bob_cookie = orm.submit(
            users_in_room, room, "Bench call", [f"bench-{ice}-alice", f"bench-{ice}-bob"]
        ).result()
    browser = launch_call_browser(playwright)
    try:
        alice = open_chat(browser, server, alice_cookie, room, call_ready(room))
        bob = open_chat(browser, server, bob_cookie, room, call_ready(room))
        to_alice: list[float] = []
        to_bob: list[float] = []
        not_relayed = 0
        for _ in range(calls):
            alice_ms, bob_ms, through_turn = one_call(alice, bob, check_relay=ice == "relay")
            to_alice.append(alice_ms)
            to_bob.append(bob_ms)
            not_relayed += not through_turn
    finally:
        browser.close()
    both_ways = [max(pair) for pair in zip(to_alice, to_bob, strict=True)]
    figures = {
        "calls": len(both_ways),
        **latency_figures([ms / 1000 for ms in both_ways]),
        "callee_hears": latency_figures([ms / 1000 for ms in to_bob]),
        "caller_hears": latency_figures([ms / 1000 for ms in to_alice]),
    }
    if ice == "relay":
        figures["not_relayed"] = not_relayed
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="per mode")
    parser.add_argument("--ice", choices=["host", "relay", "both"], default="both",
                        help="candidates the pages may use (both: host, then relay)")  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check it runs")
    options = parser.parse_args()
    if options.smoke:
        options.calls = 2
    modes = ["host", "relay"] if options.ice == "both" else [options.ice]
    missing = missing_for_calls(turn="relay" in modes)
    if missing:
        emit({"bench": "call_setup", "skipped": missing})
        return

    from playwright.sync_api import sync_playwright

    record: dict[str, Any] = {"bench": "call_setup", "ice": options.ice}
    # One Redis and database; a server per mode (the ICE policy is the server's setting).
    with (
        Stack("ours", server=False, name="bench-call-setup") as stack,
        contextlib.ExitStack() as cleanup,  # coturn: stopped before the stack's files go
        sync_playwright() as playwright,
    ):
        stack.use_in_this_process()
        for ice in modes:
            note(f"call_setup: {options.calls} calls on {ice} candidates")
            server = call_server(stack, ice, cleanup)
            figures = run_mode(playwright, server, ice, options.calls)
            if ice == "host":
                record.update(figures)  # at the top level, as before relay mode existed
            else:
                record[ice] = figures
    emit({**record, "server": "uvicorn"})


if __name__ == "__main__":
    main()
