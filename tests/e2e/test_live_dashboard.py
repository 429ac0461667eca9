"""The whole loop in a browser: the simulator writes orders, worker and beat push, the page moves.

A stack of its own (a throwaway Redis, daphne, a Celery worker and beat on it,
the session's test database), so stopping its worker stops every push and no
other test's worker stands in for it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from project.redis_server import RedisServer, free_port
from tests.support.browser import browser  # noqa: F401 - a fixture
from tests.support.processes import BASE_DIR, CeleryWorker, ChildProcess, DaphneServer

WAIT_MS = 30_000


@dataclass
class Stack:
    env: dict[str, str]
    redis: RedisServer
    daphne: DaphneServer
    worker: CeleryWorker
    beat: ChildProcess


@pytest.fixture
def stack(child_env, log_dir) -> Iterator[Stack]:
    directory = Path(tempfile.mkdtemp(prefix="push-live-redis-"))
    redis = RedisServer.start(directory, tied_to_parent=True)
    env = {**child_env, "REDIS_URL": redis.url}
    daphne = DaphneServer(env, log_dir, free_port(), name="daphne-live")
    worker = CeleryWorker(env, log_dir, f"live-{redis.port}@localhost", "celery-live")
    beat_argv = [sys.executable, "-m", "celery", "-A", "project", "beat", "--loglevel", "INFO"]
    beat = ChildProcess("celery-beat-live", beat_argv, env, log_dir)
    yield Stack(env, redis, daphne, worker, beat)
    for process in (beat, worker, daphne):
        process.stop()
    redis.stop()
    shutil.rmtree(directory, ignore_errors=True)


def manage(stack: Stack, log_dir: Path, name: str, *args: str) -> ChildProcess:
    """``python manage.py ...`` as another process on the stack."""
    argv = [sys.executable, str(BASE_DIR / "manage.py"), *args]
    return ChildProcess(name, argv, stack.env, log_dir)


def page_text(page: Any, element_id: str) -> str:
    return page.evaluate("(id) => document.getElementById(id).textContent", element_id)


@pytest.mark.django_db(transaction=True)
def test_the_simulator_moves_the_page_a_stopped_worker_shows_stale_and_a_broadcast_shows(
    stack,
    log_dir,
    browser,  # noqa: F811
):
    page = browser.new_page()
    page.goto(stack.daphne.http_url("/"))
    # The first subscribers get fresh values at once: the page fills in.
    page.wait_for_function(
        "() => window.dashboardState && dashboardState.orders && dashboardState.sales",
        timeout=WAIT_MS,
    )
    orders_before = page.evaluate("dashboardState.orders.kpis.orders_today")
    sales_before = page.evaluate("dashboardState.sales.computed_at")

    simulator = manage(stack, log_dir, "simulate", "simulate", "--rate", "20", "--duration", "3")
    assert simulator.finish(timeout=60) == 0, simulator.log_text()

    # Orders are pushed after each commit (coalesced); sales by beat every 5 s.
    page.wait_for_function(
        "(before) => dashboardState.orders.kpis.orders_today > before",
        arg=orders_before,
        timeout=WAIT_MS,
    )
    assert page_text(page, "kpi-orders-today").strip("\u2013 ")  # a figure, not the dash
    page.wait_for_function(
        """(before) => dashboardState.sales.computed_at !== before
             && Chart.getChart("sales-chart").data.datasets[0].data.some((v) => v > 0)""",
        arg=sales_before,
        timeout=WAIT_MS,
    )

    # The worker stops: nothing computes the next sales value, and the page says so.
    stack.worker.stop()
    page.wait_for_function(
        "() => document.getElementById('dashboard-sales').dataset.stale === 'true'",
        timeout=WAIT_MS,
    )

    # An admin broadcast from another process (delivered by that process: no worker).
    sender = manage(
        stack, log_dir, "broadcast", "broadcast", "Maintenance at noon", "Back by 12:30",
        "--level", "warning", "--sync",
    )  # fmt: skip
    assert sender.finish(timeout=60) == 0, sender.log_text()
    page.wait_for_function(
        "() => document.getElementById('banners').textContent.includes('Maintenance at noon')",
        timeout=WAIT_MS,
    )
    assert "Back by 12:30" in page.evaluate("document.getElementById('banners').textContent")
    page.close()
