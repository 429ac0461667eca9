"""The live dashboard page at ``/`` in a real headless Chromium, against real daphne and Redis.

The test pushes what the workers would (``ws.push.push``) and watches the page:
figures, charts, staleness, banners. What it reads: the DOM, the Chart.js
instances (``Chart.getChart``) and ``window.dashboardState``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from project.redis_server import free_port
from tasks import registry
from tests.support.browser import browser, in_plain_thread  # noqa: F401 - browser: a fixture
from tests.support.dashboard_pages import (
    WAIT_MS,
    iso,
    open_dashboard,
    sales_payload,
    wait_for_data,
)
from tests.support.processes import DaphneServer
from tests.support.users import make_user, session_cookie
from tests.support.waiting import poll_until
from ws import push

# The page's grace after next_due is 2.5 s: the marker must not come before 2 s.
MIN_GRACE_MS = 2_000


def push_from_thread(topic: str, data: Any, msg: str = "dashboard") -> int:
    """``push`` as a worker would: Playwright's sync API runs an event loop in this thread."""
    return in_plain_thread(push, topic, data, msg=msg)


def orders_payload(orders_today: int, revenue_today: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "kpis": {
            "orders_today": orders_today,
            "revenue_today": revenue_today,
            "average_order": "102.87",
            "open_orders": 3,
        },
        "by_region": [
            {"region": "EU", "label": "Europe", "orders": 5, "revenue": "500.00"},
            {"region": "NA", "label": "North America", "orders": 4, "revenue": "420.50"},
            {
                "region": "APAC",
                "label": "Asia-Pacific",
                "orders": orders_today - 9,
                "revenue": "314.00",
            },
        ],
        "latest": [
            {
                "id": 7,
                "customer": "Ada <script>",
                "amount": "12.50",
                "status": "paid",
                "region": "EU",
                "created_at": iso(now),
            },
            {
                "id": 6,
                "customer": "Grace",
                "amount": "99.00",
                "status": "pending",
                "region": "NA",
                "created_at": iso(now - timedelta(minutes=1)),
            },
        ],
        "computed_at": iso(now),
        "next_due": None,
    }


def wait_subscribed(page: Any, topic: str) -> None:
    """Until the server has answered the page's subscription (its client holds a position)."""
    page.wait_for_function(
        "(topic) => dashboardClient._topics.get(topic)?.seq != null",
        arg=topic,
        timeout=WAIT_MS,
    )


@pytest.fixture(autouse=True)
def no_recompute_owed(redis_client: Any) -> None:
    """No dashboard recompute queued, running, or owed by an earlier test.

    These tests push the values a worker would. A recompute by a real worker
    (the session's, if an earlier test started it) reads the empty test database
    and would replace them: one queued by an earlier test's saves, or one the
    page's subscription asks for because a dashboard was left marked dirty (a
    change while nobody watched) or its value is old (see the tests' first pushes).
    """
    for entry in registry.registered():
        # A run is queued (60 s at most).
        scheduled = registry.coalescing_key(entry.name, "scheduled")
        poll_until(lambda key=scheduled: not redis_client.exists(key), 70, f"{scheduled} gone")
        redis_client.delete(registry.coalescing_key(entry.name, "dirty"))


def test_the_page_renders_pushed_dashboards_marks_them_stale_and_shows_broadcasts(
    daphne_server,
    browser,  # noqa: F811
    tmp_path,
):
    # A value each before the page opens: the page starts from the snapshots.
    push_from_thread("dashboard.orders", orders_payload(10, "900.00"))
    push_from_thread("dashboard.sales", sales_payload(1, timedelta(seconds=5)))

    page = browser.new_page(locale="en-US", viewport={"width": 1280, "height": 900})
    page_errors = open_dashboard(page, daphne_server)
    for topic in ("dashboard.orders", "dashboard.sales", "dashboard.system", "broadcast"):
        wait_subscribed(page, topic)
    page.wait_for_function(
        "document.getElementById('kpi-orders-today').dataset.value === '10'", timeout=WAIT_MS
    )

    # Orders change: the KPIs, the region bars and the latest orders follow.
    orders = orders_payload(12, "1234.50")
    push_from_thread("dashboard.orders", orders)
    assert wait_for_data(page, "orders", orders["computed_at"])["stale"] is False
    assert page.inner_text("#kpi-orders-today") == "12"
    assert page.inner_text("#kpi-revenue-today") == "1,234.50"
    assert page.inner_text("#kpi-average-order") == "102.87"
    assert page.inner_text("#kpi-open-orders") == "3"
    regions = page.evaluate(
        "() => { const c = Chart.getChart('regions-chart'); "
        "return {labels: c.data.labels, orders: c.data.datasets[0].data}; }"
    )
    assert regions == {"labels": ["Europe", "North America", "Asia-Pacific"], "orders": [5, 4, 3]}
    rows = page.eval_on_selector_all(
        "#latest-orders tr", "rows => rows.map(r => Array.from(r.cells, c => c.textContent))"
    )
    assert [row[0] for row in rows] == ["7", "6"]
    assert rows[0][2] == "Ada <script>"  # text, never markup
    assert rows[0][4:] == ["12.50", "paid"]

    # Sales arrive, the next due in 1 s: the line chart and its KPIs follow.
    sales = sales_payload(7, timedelta(seconds=1))
    push_from_thread("dashboard.sales", sales)
    assert wait_for_data(page, "sales", sales["computed_at"])["stale"] is False
    assert page.inner_text("#kpi-orders-per-minute") == "3.2"
    assert page.inner_text("#kpi-revenue-last-hour") == "1,234.50"
    line = page.evaluate(
        "() => { const c = Chart.getChart('sales-chart'); "
        "return {points: c.data.labels.length, last: c.data.datasets[0].data.at(-1), "
        "revenue: c.data.datasets[1].data.at(-1)}; }"
    )
    assert line == {"points": 60, "last": 7, "revenue": 70}
    assert page.get_attribute("#sales-chart", "data-points") == "60"

    # The system figures.
    now = datetime.now(UTC)
    system = {
        "open_sockets": 3,
        "pushes_per_s": 1.5,
        "queue_length": 0,
        "computed_at": iso(now),
        "next_due": iso(now + timedelta(minutes=1)),
    }
    push_from_thread("dashboard.system", system)
    wait_for_data(page, "system", system["computed_at"])
    names = ("open-sockets", "pushes-per-s", "queue-length")
    assert [page.inner_text(f"#system-{name}") for name in names] == ["3", "1.5", "0"]

    # Then nothing: past next_due and its grace, the sales dashboard turns stale.
    page.wait_for_function(
        "document.getElementById('dashboard-sales').dataset.stale === 'true'", timeout=WAIT_MS
    )
    due_ms = datetime.fromisoformat(sales["next_due"]).timestamp() * 1000
    assert page.evaluate("dashboardState.staleSince.sales") >= due_ms + MIN_GRACE_MS
    assert page.is_visible("#dashboard-sales .badge-stale")
    assert "the worker or beat may be down" in page.inner_text("#dashboard-sales .freshness")
    kpi_tile = "#kpi-orders-per-minute >> xpath=.."
    assert page.get_attribute(kpi_tile, "data-stale") == "true"
    # Orders come on change only: never stale by time, their age is shown instead.
    assert page.get_attribute("#dashboard-orders", "data-stale") == "false"
    assert "pushed when orders change" in page.inner_text("#dashboard-orders .freshness")
    page.screenshot(path=str(tmp_path / "dashboard-stale.png"), full_page=True)

    # A fresh value clears the marker.
    fresh = sales_payload(9, timedelta(seconds=5))
    push_from_thread("dashboard.sales", fresh)
    assert wait_for_data(page, "sales", fresh["computed_at"])["stale"] is False
    assert page.get_attribute("#dashboard-sales", "data-stale") == "false"
    assert not page.is_visible("#dashboard-sales .badge-stale")
    assert page.get_attribute("#sales-chart", "data-last") == "9"

    # An admin broadcast: a banner on top, newest first, text only, dismissible.
    push_from_thread(
        "broadcast",
        {"id": 3, "title": "Maintenance", "body": "Down at <b>noon</b>", "level": "warning"},
        msg="broadcast",
    )
    push_from_thread(
        "broadcast",
        {"id": 4, "title": "Back", "body": "All good", "level": "info"},
        msg="broadcast",
    )
    page.wait_for_function(
        "document.querySelectorAll('#banners .banner').length === 2", timeout=WAIT_MS
    )
    banners = page.eval_on_selector_all(
        "#banners .banner",
        "els => els.map(e => [e.dataset.level, e.querySelector('.banner-title').textContent,"
        " e.querySelector('.banner-body').textContent])",
    )
    assert banners == [
        ["info", "Back", "All good"],
        ["warning", "Maintenance", "Down at <b>noon</b>"],
    ]
    assert page.query_selector("#banners b") is None
    page.screenshot(path=str(tmp_path / "dashboard-banners.png"), full_page=True)
    page.click("#banners .banner[data-broadcast-id='4'] .banner-close")
    assert page.eval_on_selector_all("#banners .banner", "els => els.length") == 1

    assert page_errors == []
    page.close()


def test_the_page_carries_on_when_the_server_restarts_under_it(
    child_env,
    log_dir,
    browser,  # noqa: F811
):
    # A fresh value before the page subscribes: it asks for no recompute.
    push_from_thread("dashboard.sales", sales_payload(3, timedelta(seconds=5)))
    port = free_port()
    server = DaphneServer(child_env, log_dir, port, name="daphne-dashboard-1")
    try:
        page = browser.new_page()
        page_errors = open_dashboard(page, server)
        wait_subscribed(page, "dashboard.sales")
        server.stop()
        page.wait_for_function(
            "document.getElementById('state').dataset.state === 'reconnecting'", timeout=WAIT_MS
        )
        sales = sales_payload(4, timedelta(seconds=5))
        push_from_thread("dashboard.sales", sales)  # while the page is away
        server = DaphneServer(child_env, log_dir, port, name="daphne-dashboard-2")
        # push.js backs off up to 15 s between tries; it resumes and gets what it missed.
        assert wait_for_data(page, "sales", sales["computed_at"], timeout=30_000)["stale"] is False
        assert page.inner_text("#state") == "open"
        assert page.get_attribute("#sales-chart", "data-last") == "4"
        assert page_errors == []
        page.close()
    finally:
        server.stop()


@pytest.fixture
def reader_cookie() -> tuple[Any, str]:
    """A signed-in user and the value of their session cookie."""
    user = make_user("dashboard-reader")
    return user, session_cookie(user).removeprefix("sessionid=")


@pytest.mark.django_db(transaction=True)
def test_a_signed_in_user_sees_broadcasts_sent_to_them_alone(
    reader_cookie,
    daphne_server,
    browser,  # noqa: F811
):
    user, cookie = reader_cookie
    context = browser.new_context()
    context.add_cookies([{"name": "sessionid", "value": cookie, "url": daphne_server.origin}])
    page = context.new_page()
    page_errors = open_dashboard(page, daphne_server)
    assert json.loads(page.text_content("#dashboard-config")) == {"user": user.pk}
    wait_subscribed(page, f"user.{user.pk}")

    push_from_thread(
        f"user.{user.pk}",
        {"id": 9, "title": "For you", "body": "Your export is ready", "level": "critical"},
        msg="broadcast",
    )
    page.wait_for_selector("#banners .banner[data-level='critical']", timeout=WAIT_MS)
    assert page.inner_text("#banners .banner-title") == "For you"
    assert page.get_attribute("#banners .banner", "role") == "alert"
    assert page_errors == []
    context.close()
