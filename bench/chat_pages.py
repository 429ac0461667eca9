"""Chat pages in headless Chromium for the benchmarks: users in a room, a page per user,
and what the voice-call benchmarks share (a browser with a fake microphone, the
check for what they need)."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from tests.support.browser import CHROMIUM_ARGS, FAKE_MEDIA_ARGS, chromium_path
from tests.support.processes import WebServer

WAIT_MS = 30_000


def missing_for_calls(*, turn: bool = False, faults: bool = False) -> str | None:
    """Why a call benchmark cannot run on this machine, or None when it can.

    Always Debian's chromium; ``turn``: coturn's ``turnserver``; ``faults``: root
    (nftables rules, ``ss -K``), ``nft`` and ``ss``.
    """
    from tests.support.netfault import nft_path
    from tests.support.turn import turnserver_path

    if chromium_path() is None:
        return "no chromium: 'apt-get install chromium'"
    if turn and turnserver_path() is None:
        return "no turnserver: 'apt-get install coturn'"
    if faults:
        if os.geteuid() != 0:
            return "needs root: nftables rules drop UDP, ss -K cuts sockets"
        nft = nft_path()
        if nft is None:
            return "no nft: 'apt-get install nftables'"
        if shutil.which("ss") is None:
            return "no ss: 'apt-get install iproute2'"
        listed = subprocess.run([nft, "list", "tables"], capture_output=True, text=True)
        if listed.returncode != 0:
            return f"nft does not work here: {listed.stderr.strip()}"
    return None


def launch_call_browser(playwright: Any) -> Any:
    """Headless Chromium (Debian's) whose pages get a fake microphone (a beep) without asking."""
    return playwright.chromium.launch(
        executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS + FAKE_MEDIA_ARGS
    )


def users_in_room(slug: str, title: str, usernames: list[str]) -> list[str]:
    """Make the users and the members-only room ``slug``; their session cookies' values.

    ORM code: run it in a thread of its own, as Playwright's sync API keeps an
    event loop in the main one.
    """
    from chat.models import Room
    from tests.support.users import make_user, session_cookie

    users = [make_user(name) for name in usernames]
    room = Room.objects.create(slug=slug, title=title)
    room.members.add(*users)
    return [session_cookie(user).removeprefix("sessionid=") for user in users]


def open_chat(browser: Any, server: WebServer, cookie: str, slug: str, ready: str) -> Any:
    """A page signed in with ``cookie`` on room ``slug``, once its socket is open and ``ready``
    (a selector) shows."""
    context = browser.new_context()
    context.add_cookies([{"name": "sessionid", "value": cookie, "url": server.origin}])
    page = context.new_page()
    page.goto(server.http_url(f"/chat/?room={slug}"))
    page.wait_for_selector("#state[data-state='open']", timeout=WAIT_MS)
    page.wait_for_selector(ready, timeout=WAIT_MS)
    return page


def call_ready(slug: str) -> str:
    """The selector of a page ready for a call: its panel shows ``slug`` with no call."""
    return f"#call[data-room='{slug}'][data-phase='idle']"
