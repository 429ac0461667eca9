"""The page at ``/`` (the live dashboard) in a real headless Chromium: the clock.

The dashboards themselves: ``test_dashboard_page.py``.
"""

from __future__ import annotations

from tests.support.browser import browser, in_plain_thread  # noqa: F401 - browser: a fixture
from ws import push


def test_the_page_shows_the_clock_the_server_pushes(daphne_server, browser, tmp_path):  # noqa: F811
    page = browser.new_page()
    page.goto(daphne_server.http_url("/"))
    page.wait_for_function("document.getElementById('state').textContent === 'open'")

    # Playwright's sync API runs an event loop in this thread; push as a view would,
    # from a thread of its own.
    seq = in_plain_thread(
        push,
        "dashboard.clock",
        {"server_time": "2026-01-02T03:04:05.000+00:00", "uptime_s": 7200},
        msg="clock",
    )

    page.wait_for_function(f"document.getElementById('clock').dataset.seq === '{seq}'")
    assert "(host up 2 h)" in page.inner_text("#clock")
    page.screenshot(path=str(tmp_path / "home.png"))
    page.close()
