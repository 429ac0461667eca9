"""Chat pages in headless Chromium for the benchmarks: users in a room, a page per user,
and what the voice-call benchmarks share (a browser with a fake microphone, a call
between two pages, an in-page audio sampler, the check for what they need)."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from tests.support.browser import CHROMIUM_ARGS, FAKE_MEDIA_ARGS, chromium_path
from tests.support.processes import WebServer

WAIT_MS = 30_000

# On a page in a call: every ~20 ms, read chatCalls.stats(); note Date.now() in
# window.audioRises whenever a connection's inbound audio bytes passed the most it had
# shown (a report missing for a sample, then back, is no rise; a new connection starts
# from 0), and keep the last sample's figures in window.peerStats. Reset the list with
# ``window.audioRises = []``. (Chromium caches a getStats() report for about 50 ms, so
# rises show in steps of that even while packets come every 20 ms.)
AUDIO_RISES = """() => {
  window.audioRises = [];
  window.peerStats = {};
  const most = new Map(); // "<peer id> <createdAt>": the most inbound bytes it has shown
  const tick = async () => {
    try {
      const stats = await chatCalls.stats();
      let rose = false;
      for (const [id, peer] of Object.entries(stats)) {
        const connection = `${id} ${peer.createdAt}`;
        if (peer.bytesReceived > (most.get(connection) || 0)) {
          most.set(connection, peer.bytesReceived);
          rose = true;
        }
      }
      if (rose) window.audioRises.push(Date.now());
      window.peerStats = stats;
    } finally {
      setTimeout(tick, 20);
    }
  };
  tick();
}"""

# True once every peer connection of the page is up and its audio rose after ``since``.
FLOWING_SINCE = """(since) => {
  const peers = Object.values(window.peerStats);
  const up = (peer) => peer.state === "connected" && ["connected", "completed"].includes(peer.ice);
  return peers.length > 0 && peers.every(up) && window.audioRises.some((t) => t > since);
}"""


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


def page_now(page: Any) -> int:
    """``Date.now()`` on the page: the clock every page of the machine shares."""
    return int(page.evaluate("() => Date.now()"))


def wait_flowing(*pages: Any, timeout_ms: int = WAIT_MS) -> None:
    """Wait until on each page (``AUDIO_RISES`` installed) every connection is up and its
    inbound audio rose after now."""
    for page in pages:
        page.wait_for_function(FLOWING_SINCE, arg=page_now(page), timeout=timeout_ms, polling=20)


def connect_call(caller: Any, callee: Any) -> None:
    """``caller`` presses Call, ``callee`` Accept; both pages then sample their audio
    (``AUDIO_RISES``) and it flows both ways."""
    caller.click("#call-start")
    callee.wait_for_selector("#call[data-phase='incoming']", timeout=WAIT_MS)
    callee.click("#call-accept")
    for page in (caller, callee):
        page.wait_for_selector("#call[data-phase='in-call']", timeout=WAIT_MS)
        page.evaluate(AUDIO_RISES)
    wait_flowing(caller, callee)
