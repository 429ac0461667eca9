"""Headless Chromium, Debian's package, driven by Playwright (no browser download)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

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


def _launch(args: list[str]) -> Iterator[object]:
    path = chromium_path()
    if path is None:
        pytest.skip("no chromium: 'apt-get install chromium' (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, headless=True, args=args)
        yield chromium
        chromium.close()
