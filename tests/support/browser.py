"""Headless Chromium, Debian's package, driven by Playwright (no browser download)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest

T = TypeVar("T")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # The machine's network is closed: no background calls home.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


# getUserMedia without a prompt, from a synthetic microphone (a beep): voice-call tests.
FAKE_MEDIA_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM_PATH") or shutil.which("chromium")


@pytest.fixture
def browser() -> Iterator[object]:
    """A headless Chromium for one test.

    Per test, not per session: Playwright's sync API runs an event loop in the
    main thread while it is open, which async tests after it could not share.
    """
    yield from _launch(CHROMIUM_ARGS)


@pytest.fixture
def media_browser() -> Iterator[object]:
    """A headless Chromium whose pages get a fake microphone without asking."""
    yield from _launch(CHROMIUM_ARGS + FAKE_MEDIA_ARGS)


@pytest.fixture
def media_browsers() -> Iterator[Callable[..., Any]]:
    """``launch(audio_file=None)``: a headless Chromium of its own with a fake microphone,
    for each page that must hear something else (``audio_file``: a WAV it plays, looped,
    as every microphone; without one, Chromium's beep). All close when the test ends."""
    path = chromium_path()
    if path is None:
        pytest.skip("no chromium: 'apt-get install chromium' (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched: list[Any] = []

        def launch(audio_file: object = None) -> Any:
            args = CHROMIUM_ARGS + FAKE_MEDIA_ARGS
            if audio_file is not None:
                args = [*args, f"--use-file-for-fake-audio-capture={audio_file}"]
            chromium = playwright.chromium.launch(executable_path=path, headless=True, args=args)
            launched.append(chromium)
            return chromium

        yield launch
        for chromium in launched:
            chromium.close()


def _launch(args: list[str]) -> Iterator[object]:
    path = chromium_path()
    if path is None:
        pytest.skip("no chromium: 'apt-get install chromium' (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, headless=True, args=args)
        yield chromium
        chromium.close()


def in_plain_thread(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` in a thread of its own, for sync code that must not
    run where an event loop does (the ORM, ``push``): Playwright's sync API runs one in
    the test's thread.

    The thread's database connection is closed before it ends: one left open
    would keep the test database from being dropped at the end of the session.
    """

    def call() -> T:
        from django.db import connections

        try:
            return function(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


def signed_in_page(
    browser: Any, server: Any, user: Any, path: str, **context_options: Any
) -> tuple[Any, list[str]]:
    """A page of its own context (cookies), signed in as ``user``, opened at ``path``.

    Also the list its uncaught errors go to: a test ends asserting it is empty.
    ``context_options`` go to ``browser.new_context`` (``locale``, ``timezone_id``...).
    """
    from tests.support.users import session_cookie

    context = browser.new_context(**context_options)
    cookie = in_plain_thread(session_cookie, user).removeprefix("sessionid=")
    context.add_cookies([{"name": "sessionid", "value": cookie, "url": server.origin}])
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.http_url(path))
    return page, errors
