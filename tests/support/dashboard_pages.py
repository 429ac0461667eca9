"""The live dashboard page in tests: opening it, the data it shows, payloads like a worker's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.processes import WebServer

WAIT_MS = 10_000


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sales_payload(last_orders: int, due_in: timedelta) -> dict[str, Any]:
    now = datetime.now(UTC)
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=59)
    counts = [n % 4 for n in range(59)] + [last_orders]
    series = [
        {"t": iso(start + timedelta(minutes=n)), "orders": count, "revenue": f"{count * 10}.00"}
        for n, count in enumerate(counts)
    ]
    return {
        "orders_per_minute": 3.2,
        "revenue_last_hour": "1234.50",
        "series": series,
        "computed_at": iso(now),
        "next_due": iso(now + due_in),
    }


def open_dashboard(page: Any, server: WebServer) -> list[str]:
    """Go to ``/``; wait for the socket; return the list the page's uncaught errors go to."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.http_url("/"))
    page.wait_for_function(
        "document.getElementById('state').textContent === 'open'", timeout=WAIT_MS
    )
    return errors


def wait_for_data(
    page: Any, name: str, computed_at: str, timeout: float = WAIT_MS
) -> dict[str, Any]:
    """Until the page shows the message computed at ``computed_at``; what it showed then."""
    return page.wait_for_function(
        """([name, computed_at]) => {
          const state = window.dashboardState;
          if (!state[name] || state[name].computed_at !== computed_at) return false;
          return {stale: state.stale[name], since: state.staleSince[name]};
        }""",
        arg=[name, computed_at],
        timeout=timeout,
    ).json_value()
