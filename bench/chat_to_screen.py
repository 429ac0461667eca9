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
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.common import Stack, latency_figures  # noqa: E402
from tests.support.browser import CHROMIUM_ARGS, chromium_path  # noqa: E402
from tests.support.processes import WebServer  # noqa: E402

ROOM = "bench-chat"

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


def make_users_and_room() -> list[str]:
    """Alice and Bob in room ``ROOM``; their session cookies' values."""
    from chat.models import Room
    from tests.support.users import make_user, session_cookie

    users = [make_user(name) for name in ("bench-alice", "bench-bob")]
    room = Room.objects.create(slug=ROOM, title="Bench room")
    room.members.add(*users)
    return [session_cookie(user).removeprefix("sessionid=") for user in users]


def open_chat(browser: Any, server: WebServer, cookie: str) -> Any:
    context = browser.new_context()
    context.add_cookies([{"name": "sessionid", "value": cookie, "url": server.origin}])
    page = context.new_page()
    page.goto(server.http_url(f"/chat/?room={ROOM}"))
    page.wait_for_selector("#state[data-state='open']", timeout=30_000)
    page.wait_for_selector("#text:not([disabled])", timeout=30_000)
    return page


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
        os.environ.update(stack.env)  # this process's ORM: the stack's database and Redis
        import django

        django.setup()
        from playwright.sync_api import sync_playwright

        latencies: list[float] = []
        with sync_playwright() as playwright, ThreadPoolExecutor(max_workers=1) as orm:
            # In a thread: Playwright's sync API keeps an event loop in this one.
            alice_cookie, bob_cookie = orm.submit(make_users_and_room).result()
            browser = playwright.chromium.launch(
                executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
            )
            sender = open_chat(browser, server, alice_cookie)
            reader = open_chat(browser, server, bob_cookie)
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
