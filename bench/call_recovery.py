"""How a one-to-one voice call rides out real faults, in Chromium: socket blips, lost UDP.

The set-up of ``call_setup``: a stack of its own (a throwaway Redis, a fresh
SQLite database, uvicorn), two users in a members-only room, headless Chromium
(Debian's ``chromium``) with a fake microphone, a chat page each; Alice calls,
Bob accepts, audio flows both ways. Each page then reads ``chatCalls.stats()``
every 20 ms and notes ``Date.now()`` whenever its inbound audio bytes rose
(``bench.chat_pages.AUDIO_RISES``); all pages and this process share the one
clock. Then, on that one call:

- ``--blips N``: each round cuts Bob's WebSocket from the server's side (``ss
  -K`` on every connection to the server's port but Alice's: hers are those
  open once her page was, and her socket is never cut, which the run checks:
  ``alice_socket_drops`` must stay 0). His page reconnects and rejoins; the
  media path is untouched. ``blip_to_in_call``: from the cut until Alice's chip
  for Bob, having shown ``reconnecting``, shows ``in_call`` again (a
  MutationObserver timestamps its changes). ``audio_gap_ms``: the longest
  interval between two rises of Alice's inbound audio from the last rise before
  the cut to the first after he is back. Target: nothing beyond packetisation.
  Chromium caches a getStats() report for about 50 ms, so sampled every 20 ms a
  steady stream shows rises about 60 ms apart: ``audio_gap_calm_ms`` is the
  same figure over as long a window just after each blip, the sampling's floor.
- ``--faults N``: each round drops all UDP on this machine (nftables,
  ``tests.support.netfault.udp_blocked``) for ``--fault-s`` seconds. Chromium
  calls the ICE disconnected after some 6-8 s without an answer and the page
  restarts it 3 s later (calls.js ``DISCONNECTED_RESTART_MS``), so a fault of
  8 s ends before any restart and one of 12 s restarts. ``fault_to_audio``:
  from the fault's end (the clock read once ``nft`` has deleted the rules;
  audio back before that read counts 0) until inbound audio rises again on both
  pages. ``restarted_rounds``: rounds in which a page's ICE restart counter
  rose; ``recovered_without_restart``: ICE came back by itself on the same
  connection; ``new_connection_rounds``: a page made a new one. Audio rising
  while the fault held (it should not: no path but UDP) counts in
  ``audio_in_fault_rounds``. The next round waits until both pages are
  connected with audio rising.

Blips run first, so an ICE restart left over from a fault cannot fall in a
blip's window. There is no seed equivalent: the seed (``bench/reference``) has
no calls. Needs root (nftables, ``ss -K``), ``nft``, ``ss`` and chromium;
without them it prints ``{"bench": "call_recovery", "skipped": "<why>"}`` and
exits 0. A fault drops UDP machine-wide, so other call tests running meanwhile
are disturbed, and disturb this: ``disturbed_rounds`` counts rounds that began
or ended with another run's fault table present. Prints one JSON line.

    .venv/bin/python bench/call_recovery.py --faults 20 --fault-s 12 --blips 20
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.chat_pages import (  # noqa: E402
    call_ready,
    connect_call,
    launch_call_browser,
    missing_for_calls,
    open_chat,
    page_now,
    users_in_room,
    wait_flowing,
)
from bench.common import Stack, emit, latency_figures, note  # noqa: E402
from tests.support.netfault import cut_connections, established_client_ports  # noqa: E402
from tests.support.processes import WebServer  # noqa: E402

ROOM = "bench-recovery"
WAIT_MS = 30_000
# A fault's end to audio both ways: longer than this and the call is taken for lost.
RECOVERY_MS = 60_000
# Rises this long after a fault began may still be packets from before it (the
# stats cache); later ones mean audio found a path UDP loss does not stop.
STALE_STATS_MS = 200

# From now on, log each change of ``target``'s data-``key`` (null while it is absent)
# with Date.now() in window.seen[name], watching ``root`` and all below it.
WATCH = """([name, root, target, key]) => {
  const log = [];
  (window.seen ||= {})[name] = log;
  const note = () => {
    const found = document.querySelector(target);
    const value = found ? found.dataset[key] : null;
    if (!log.length || log[log.length - 1].value !== value) log.push({ t: Date.now(), value });
  };
  note();
  const what = { childList: true, subtree: true, attributes: true };
  new MutationObserver(note).observe(document.querySelector(root), what);
}"""

# When Alice's chip for Bob showed in_call again after showing reconnecting, since ``t``.
BACK_IN_CALL = """(since) => {
  const log = window.seen.peer.filter((entry) => entry.t >= since);
  const away = log.findIndex((entry) => entry.value === "reconnecting");
  const back = away < 0 ? null : log.slice(away).find((entry) => entry.value === "in_call");
  return back ? back.t : null;
}"""

FIRST_RISE_SINCE = "(since) => window.audioRises.find((t) => t >= since) || null"

# Per connection of the page: its ICE restarts and which connection it is.
CONNECTIONS = "() => Object.values(window.peerStats).map((peer) => [peer.createdAt, peer.restarts])"


class ServerSockets:
    """The TCP connections established to the server's port, told apart by page.

    Alice's are those open once her page was (before Bob's opened); her socket is
    never cut, so of those only idle HTTP keep-alives go away, and they are
    forgotten once gone (a port number reused by a new connection of Bob's then
    still counts as his). Every other connection is Bob's page's: after a cut he
    reconnects on new ones, so they are listed again each round. A connection
    Alice's page opened later (an HTTP fetch) would be taken for his and cut too,
    which her socket would not notice; ``alice_socket_drops`` checks that.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.alices: set[int] = set()

    def note_alices(self) -> None:
        self.alices = established_client_ports(self.port)

    def bobs(self) -> set[int]:
        now = established_client_ports(self.port)
        self.alices &= now
        if not self.alices:
            raise RuntimeError("Alice's socket to the server is gone")
        bobs = now - self.alices
        if not bobs:
            raise RuntimeError("no connection of Bob's page to the server")
        return bobs

    def cut(self, client_ports: set[int]) -> None:
        """Destroy, on the server's side, the connections from ``client_ports`` (``ss -K``)."""
        cut_connections(self.port, client_ports)


def others_faulting() -> bool:
    """Whether another run's fault table (tests.support.netfault) exists now."""
    from tests.support.netfault import TABLE_PREFIX, fault_tables

    ours = f"{TABLE_PREFIX}{os.getpid()}_"
    return any(not table.startswith(ours) for table in fault_tables())


def longest_gap(rises: list[int], after: int, until: int) -> int:
    """The longest interval (ms) between two consecutive ``rises``, from the last one at
    or before ``after`` to the first one after ``until``."""
    first = max(i for i, t in enumerate(rises) if t <= after)
    last = min(i for i, t in enumerate(rises) if t > until)
    span = rises[first : last + 1]
    return max(later - earlier for earlier, later in itertools.pairwise(span))


def blip_round(alice: Any, bob: Any, sockets: ServerSockets) -> tuple[int, int, int]:
    """Cut Bob's socket once: ms from the cut to Alice's chip for him in_call again, the
    longest gap (ms) in Alice's inbound audio meanwhile, and the longest in as long a
    window just after (the sampling's own floor)."""
    bob.wait_for_selector("#state[data-state='open']", timeout=WAIT_MS)
    alice.wait_for_selector("#call-peers li[data-status='in_call']", timeout=WAIT_MS)
    bobs = sockets.bobs()
    alice.evaluate("() => { window.audioRises = []; }")
    wait_flowing(alice, bob)  # a rise on Alice's page before the cut: the gap's first end
    cut_at = page_now(alice)
    sockets.cut(bobs)
    back_at = alice.wait_for_function(BACK_IN_CALL, arg=cut_at, timeout=WAIT_MS).json_value()
    calm_from = alice.wait_for_function(
        FIRST_RISE_SINCE, arg=back_at + 1, timeout=WAIT_MS, polling=20
    ).json_value()
    calm_until = calm_from + (back_at - cut_at)
    alice.wait_for_function(FIRST_RISE_SINCE, arg=calm_until + 1, timeout=WAIT_MS, polling=20)
    rises: list[int] = alice.evaluate("() => window.audioRises")
    gap = longest_gap(rises, cut_at, back_at)
    return back_at - cut_at, gap, longest_gap(rises, calm_from, calm_until)


def connections(page: Any) -> list[list[int]]:
    """[createdAt, restarts] of each of the page's connections, from its last stats sample."""
    return page.evaluate(CONNECTIONS)


def fault_round(alice: Any, bob: Any, fault_s: float) -> dict[str, Any] | None:
    """Drop all UDP for ``fault_s`` s once; None if audio did not come back both ways
    within RECOVERY_MS, else ``back_ms`` (the fault's end to audio on both pages),
    ``how`` ("restarted", "same_ice" or "new_connection") and ``flowed_in_fault``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    from tests.support.netfault import udp_blocked

    pages = (alice, bob)
    for page in pages:
        page.evaluate("() => { window.audioRises = []; }")
    wait_flowing(*pages)
    before = [connections(page) for page in pages]
    with udp_blocked():
        began = page_now(alice)
        alice.wait_for_timeout(fault_s * 1000)  # the fault's duration
        still_on = page_now(alice)  # the rules are in force until here at least
    ended = page_now(alice)  # ...and gone by here (nft's delete takes some 15 ms)
    heard = []
    for page in pages:
        try:
            handle = page.wait_for_function(
                FIRST_RISE_SINCE, arg=still_on + 1, timeout=RECOVERY_MS, polling=20
            )
        except PlaywrightTimeout as error:  # this call is not coming back
            note(f"call_recovery: no audio {RECOVERY_MS} ms after a fault: {error}")
            return None
        heard.append(handle.json_value())
    wait_flowing(*pages)
    after = [connections(page) for page in pages]
    if any([c for c, _ in a] != [c for c, _ in b] for a, b in zip(after, before, strict=True)):
        how = "new_connection"
    elif after != before:
        how = "restarted"
    else:
        how = "same_ice"
    rises = [t for page in pages for t in page.evaluate("() => window.audioRises")]
    flowed = any(began + STALE_STATS_MS < t <= still_on for t in rises)
    # Audio back while nft was still deleting the rules, before the clock was read: 0.
    return {"back_ms": max(0, max(heard) - ended), "how": how, "flowed_in_fault": flowed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faults", type=int, default=20, help="rounds of UDP dropped")
    parser.add_argument("--fault-s", type=float, default=8.0, help="how long each drops UDP")
    parser.add_argument("--blips", type=int, default=20, help="rounds of Bob's socket cut")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check it runs")
    options = parser.parse_args()
    if options.smoke:
        # Short faults: UDP is back before Chromium calls the ICE disconnected (some 6 s).
        options.faults, options.blips, options.fault_s = 2, 2, 3.0
    missing = missing_for_calls(faults=True)
    if missing:
        emit({"bench": "call_recovery", "skipped": missing})
        return

    from playwright.sync_api import sync_playwright

    with Stack("ours", name="bench-call-recovery") as stack, sync_playwright() as playwright:
        server = stack.server
        assert isinstance(server, WebServer)
        stack.use_in_this_process()
        # In a thread: Playwright's sync API keeps an event loop in this one.
        with ThreadPoolExecutor(max_workers=1) as orm:
            alice_cookie, bob_cookie = orm.submit(
                users_in_room, ROOM, "Bench recovery", ["recovery-alice", "recovery-bob"]
            ).result()
        browser = launch_call_browser(playwright)
        sockets = ServerSockets(server.port)
        alice = open_chat(browser, server, alice_cookie, ROOM, call_ready(ROOM))
        sockets.note_alices()
        bob = open_chat(browser, server, bob_cookie, ROOM, call_ready(ROOM))
        connect_call(alice, bob)
        alice.evaluate(WATCH, ["peer", "#call-peers", "#call-peers li", "status"])
        alice.evaluate(WATCH, ["socket", "#state", "#state", "state"])

        disturbed = 0
        back_in_call: list[float] = []
        gaps: list[float] = []
        calm_gaps: list[float] = []
        for number in range(options.blips):
            note(f"call_recovery: blip {number + 1}/{options.blips}")
            others = others_faulting()
            took, gap, calm_gap = blip_round(alice, bob, sockets)
            disturbed += others or others_faulting()
            back_in_call.append(took / 1000)
            gaps.append(gap / 1000)
            calm_gaps.append(calm_gap / 1000)
        alice_drops = len(alice.evaluate("() => window.seen.socket")) - 1

        rounds: list[dict[str, Any]] = []
        for number in range(options.faults):
            note(f"call_recovery: fault {number + 1}/{options.faults} ({options.fault_s} s)")
            others = others_faulting()
            outcome = fault_round(alice, bob, options.fault_s)
            disturbed += others or others_faulting()
            if outcome is None:
                break  # the call is gone: no more rounds on it
            rounds.append(outcome)
        browser.close()

    hows = [outcome["how"] for outcome in rounds]
    emit(
        {
            "bench": "call_recovery",
            "faults": options.faults,
            "fault_s": options.fault_s,
            "fault_to_audio": latency_figures([o["back_ms"] / 1000 for o in rounds]),
            "recovered_rounds": len(rounds),
            "restarted_rounds": hows.count("restarted"),
            "recovered_without_restart": hows.count("same_ice"),
            "new_connection_rounds": hows.count("new_connection"),
            "audio_in_fault_rounds": sum(outcome["flowed_in_fault"] for outcome in rounds),
            "blips": options.blips,
            "audio_gap_ms": latency_figures(gaps),
            "audio_gap_calm_ms": latency_figures(calm_gaps),
            "blip_to_in_call": latency_figures(back_in_call),
            "alice_socket_drops": alice_drops,
            "disturbed_rounds": disturbed,
            "sample_ms": 20,
            "server": "uvicorn",
        }
    )


if __name__ == "__main__":
    main()
