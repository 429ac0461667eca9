"""The page at ``/`` (the live dashboard) in a real headless Chromium: the clock.

The other dashboards: ``test_dashboard_page.py``.
"""

from __future__ import annotations

import datetime as dt

import psutil

from tasks.tasks import refresh_dashboard
from tests.support.browser import browser  # noqa: F401 - a fixture


def test_the_page_shows_the_clock_a_worker_computes(
    daphne_server,
    celery_worker,
    browser,  # noqa: F811
    tmp_path,
):
    started_ms = dt.datetime.now(dt.UTC).timestamp() * 1000
    page = browser.new_page()
    page.goto(daphne_server.http_url("/"))
    page.wait_for_function("dashboardClient._topics.get('dashboard.clock')?.seq != null")

    refresh_dashboard.delay("clock")  # what beat sends for the dashboard-clock row

    # A value computed since the test began: not the snapshot of an earlier test's.
    page.wait_for_function(
        "(started) => Date.parse(dashboardState.clock?.computed_at) >= started",
        arg=started_ms,
    )
    shown = page.evaluate(
        "({data: dashboardState.clock, text: document.getElementById('clock').textContent})"
    )
    server_time = dt.datetime.fromisoformat(shown["data"]["server_time"])
    assert abs((dt.datetime.now(dt.UTC) - server_time).total_seconds()) < 30
    uptime_s = shown["data"]["uptime_s"]
    assert abs(uptime_s - (dt.datetime.now(dt.UTC).timestamp() - psutil.boot_time())) < 30
    assert shown["text"].endswith(f"(host up {uptime_s // 3600} h)")
    assert page.get_attribute("[data-dashboard='clock']", "data-stale") == "false"
    page.screenshot(path=str(tmp_path / "home.png"))
    page.close()
