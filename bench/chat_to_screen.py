"""Time from sending a chat message on one page to it showing on another, in Chromium.

A stack of its own: a throwaway Redis, a fresh SQLite database and the web
server (uvicorn) as the project deploys it, two users in one room, and
headless Chromium (Debian's ``chromium``) with a chat page for each. Each round,
Alice's page notes ``Date.now()`` and submits the form (the socket's publish:
membership, validation, rate limit, the row, the push after commit); Bob's page
notes ``Date.now()`` when the message's row appears in its DOM. Both pages
read the same clock. Rounds start at most every ``--gap-ms`` (100 ms), inside the
socket's frame limit (``PUSH_RATE_PER_S``, 20/s); chat's own per-user limit
(``CHAT_RATE_MESSAGES``) is lifted for the run, as one sender at this pace is over
it by design. Prints one JSON line:
``{"bench": "chat_to_screen", "messages": N, "p50_ms": ..., "p99_ms": ..., ...}``.

    .venv/bin/python bench/chat_to_screen.py --messages 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.chat_pages import open_chat, users_in_room  # noqa: E402
from bench.common import Stack, latency_figures  # noqa: E402
from tests.support.browser import CHROMIUM_ARGS, chromium_path  # noqa: E402
from tests.support.processes import WebServer  # noqa: E402

ROOM = "bench-chat"
READY = "#text:not([disabled])"  # a page is ready once it can send

# On the reader's page: when each message's row appears (text -> Date.now()).
WATCH_MESSAGES = """() => {
  window.shownAt = {};
  const list = document.getElementById("messages");
  new MutationObserver(() => {
    for (const row of list.querySelectorAll("li .text")) {
      if (!(row.textContent in shownAt)) shownAt[row.textContent] = Date.now();
    }
  }).observe(list, {childList: true, subtree: true});
}"""

# On the sender's page: note the time, then submit the form as a click on Send does.
SEND = """(text) => {
  document.getElementById("text").value = text;
  const sentAt = Date.now();
  document.getElementById("send").requestSubmit();
  return sentAt;
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--gap-ms", type=float, default=100.0, help="least time between sends")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check it runs")
    options = parser.parse_args()
    if options.smoke:
        options.messages = 3

    # Chat's per-user limit is lifted for the run; the web server reads it.
    extra_env = {"CHAT_RATE_MESSAGES": str(options.messages * 10)}
    with Stack("ours", extra_env=extra_env, name="bench-chat-to-screen") as stack:
        server = stack.server
        assert isinstance(server, WebServer)
        stack.use_in_this_process()
        from playwright.sync_api import sync_playwright

        latencies: list[float] = []
        with sync_playwright() as playwright, ThreadPoolExecutor(max_workers=1) as orm:
            # In a thread: Playwright's sync API keeps an event loop in this one.
            alice_cookie, bob_cookie = orm.submit(
                users_in_room, ROOM, "Bench room", ["bench-alice", "bench-bob"]
            ).result()
            browser = playwright.chromium.launch(
                executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
            )
            sender = open_chat(browser, server, alice_cookie, ROOM, READY)
            reader = open_chat(browser, server, bob_cookie, ROOM, READY)
            reader.evaluate(WATCH_MESSAGES)
            started = time.monotonic()
            for n in range(options.messages):
                due = started + n * options.gap_ms / 1000
                time.sleep(max(0.0, due - time.monotonic()))  # pacing at --gap-ms
                text = f"bench message {n}"
                sent_at = sender.evaluate(SEND, text)
                reader.wait_for_function("(text) => text in shownAt", arg=text, timeout=30_000)
                latencies.append(reader.evaluate("(text) => shownAt[text]", text) - sent_at)
            browser.close()
        print(
            json.dumps(
                {
                    "bench": "chat_to_screen",
                    "messages": len(latencies),
                    **latency_figures([ms / 1000 for ms in latencies]),
                    "gap_ms": options.gap_ms,
                    "server": "uvicorn",
                }
            )
        )


if __name__ == "__main__":
    main()
