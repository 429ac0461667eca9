"""Time from accepting a voice call to audio flowing both ways, in Chromium.

A stack of its own (a throwaway Redis, a fresh SQLite database, the web server
as the project deploys it: uvicorn), two users in a members-only room, and
headless Chromium (Debian's ``chromium``) with a fake microphone and a chat
page for each. Each round, Alice's page presses Call; once Bob's page shows the
call ringing, it notes ``Date.now()`` and presses Accept (his microphone opens,
the server joins him and tells him to offer, the offer, answer and ICE
candidates cross the server, the peers connect). Each page then notes when its
peer connection's ``getStats()`` first shows inbound audio bytes. Alice hangs up
and the next round begins. Both pages read the same clock. Prints one JSON line:
``{"bench": "call_setup", "calls": N, "p50_ms": ..., "p99_ms": ..., ...}``, where the
latencies are accept to audio flowing both ways (the later of the two pages),
with each direction's figures beside them.

    .venv/bin/python bench/call_setup.py --calls 20
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.chat_pages import open_chat, users_in_room  # noqa: E402
from bench.common import Stack, latency_figures  # noqa: E402
from tests.support.browser import CHROMIUM_ARGS, FAKE_MEDIA_ARGS, chromium_path  # noqa: E402
from tests.support.processes import WebServer  # noqa: E402

ROOM = "bench-call"
# A page is ready once its call panel shows the room with no call.
READY = f"#call[data-room='{ROOM}'][data-phase='idle']"
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


def one_call(alice: Any, bob: Any) -> tuple[float, float]:
    """One call: ms from Bob's accept to audio on (Alice's page, Bob's page)."""
    alice.click("#call-start")
    bob.wait_for_selector("#call[data-phase='incoming']", timeout=WAIT_MS)
    for page in (alice, bob):
        page.evaluate(WATCH_AUDIO)
    accepted_at = bob.evaluate(ACCEPT)
    heard = []
    for page in (alice, bob):
        page.wait_for_function("() => audioAt !== null", timeout=WAIT_MS)
        heard.append(page.evaluate("() => audioAt") - accepted_at)
    alice.click("#call-hangup")
    for page in (alice, bob):
        page.wait_for_selector("#call[data-phase='idle']", timeout=WAIT_MS)
    return heard[0], heard[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check it runs")
    options = parser.parse_args()
    if options.smoke:
        options.calls = 2

    with Stack("ours", name="bench-call-setup") as stack:
        server = stack.server
        assert isinstance(server, WebServer)
        stack.use_in_this_process()
        from playwright.sync_api import sync_playwright

        to_alice: list[float] = []
        to_bob: list[float] = []
        with sync_playwright() as playwright, ThreadPoolExecutor(max_workers=1) as orm:
            # In a thread: Playwright's sync API keeps an event loop in this one.
            alice_cookie, bob_cookie = orm.submit(
                users_in_room, ROOM, "Bench call", ["bench-call-alice", "bench-call-bob"]
            ).result()
            browser = playwright.chromium.launch(
                executable_path=chromium_path(),
                headless=True,
                args=CHROMIUM_ARGS + FAKE_MEDIA_ARGS,
            )
            alice = open_chat(browser, server, alice_cookie, ROOM, READY)
            bob = open_chat(browser, server, bob_cookie, ROOM, READY)
            for _ in range(options.calls):
                alice_ms, bob_ms = one_call(alice, bob)
                to_alice.append(alice_ms)
                to_bob.append(bob_ms)
            browser.close()
        both_ways = [max(pair) for pair in zip(to_alice, to_bob, strict=True)]
        print(
            json.dumps(
                {
                    "bench": "call_setup",
                    "calls": len(both_ways),
                    **latency_figures([ms / 1000 for ms in both_ways]),
                    "callee_hears": latency_figures([ms / 1000 for ms in to_bob]),
                    "caller_hears": latency_figures([ms / 1000 for ms in to_alice]),
                    "server": "uvicorn",
                }
            )
        )


if __name__ == "__main__":
    main()
