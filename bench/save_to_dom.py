"""Time from ``Order.save()`` to the dashboard page showing it, measured in the browser.

A stack of its own: a throwaway Redis, a fresh SQLite database, the web server (uvicorn) and a
Celery worker as the project deploys them, and headless Chromium (Debian's
``chromium``) on ``/``. Each round saves one order in this process and waits
until the page's "orders today" figure shows it; the page notes the moment its
DOM changed (``Date.now()``, the same clock as this process's ``time.time()``).
Prints one JSON line:
``{"bench": "save_to_dom", "saves": N, "p50_ms": ..., "p99_ms": ..., ...}``.

    .venv/bin/python bench/save_to_dom.py --saves 200             # back to back
    .venv/bin/python bench/save_to_dom.py --saves 200 --gap-ms 300  # saves 300 ms apart
    .venv/bin/python bench/save_to_dom.py --smoke                   # three saves
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

from bench.common import Stack, latency_figures  # noqa: E402
from tests.support.browser import CHROMIUM_ARGS, chromium_path  # noqa: E402
from tests.support.processes import WebServer  # noqa: E402

WATCH_KPI = """() => {
  window.kpiChanges = [];
  const element = document.getElementById("kpi-orders-today");
  new MutationObserver(() => kpiChanges.push([element.textContent, Date.now()]))
    .observe(element, {childList: true, characterData: true, subtree: true});
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=200)
    parser.add_argument(
        "--gap-ms",
        type=float,
        default=0,
        help="pause after each update shows (a save within DASHBOARD_COALESCE_MS of the "
        "last recompute waits for the rest of that interval)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check it runs")
    options = parser.parse_args()
    if options.smoke:
        options.saves = 3

    with Stack("ours", name="bench-save-to-dom") as stack:
        server = stack.server
        assert isinstance(server, WebServer)
        stack.start_worker(name="bench-save-to-dom-worker")
        stack.use_in_this_process()
        from playwright.sync_api import sync_playwright

        from dashboard.models import Order

        latencies: list[float] = []
        with sync_playwright() as playwright, ThreadPoolExecutor(max_workers=1) as orm:
            browser = playwright.chromium.launch(
                executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page()
            page.goto(server.http_url("/"))
            page.wait_for_function("() => window.dashboardState && dashboardState.orders")
            page.evaluate(WATCH_KPI)
            shown = page.evaluate("dashboardState.orders.kpis.orders_today")
            for n in range(options.saves):
                saved_at = time.time()
                # In a thread: Playwright's sync API keeps an event loop in this one.
                orm.submit(
                    Order.objects.create, amount="10.00", region="EU", customer=f"bench-{n}"
                ).result()
                shown += 1
                page.wait_for_function(
                    "(count) => dashboardState.orders.kpis.orders_today >= count",
                    arg=shown,
                    timeout=30_000,
                )
                changed_at = page.evaluate("kpiChanges[kpiChanges.length - 1][1]")
                latencies.append(changed_at - saved_at * 1000)
                time.sleep(options.gap_ms / 1000)  # pacing between rounds, by request
            browser.close()
        print(
            json.dumps(
                {
                    "bench": "save_to_dom",
                    "saves": len(latencies),
                    **latency_figures([ms / 1000 for ms in latencies]),
                    "coalesce_ms": int(stack.env.get("DASHBOARD_COALESCE_MS", "250")),
                    "gap_ms": options.gap_ms,
                    "server": "uvicorn",
                }
            )
        )


if __name__ == "__main__":
    main()
