"""Beat's built-in clock job, scheduled from the database, pushed by the worker."""

from __future__ import annotations

import asyncio
import datetime as dt
import sys

import pytest

from tests.support.clients import open_socket, recv_json, recv_until, subscribe
from tests.support.processes import ChildProcess


def is_live_tick(frame: dict) -> bool:
    """A clock message pushed now, not the snapshot a new subscriber is given first."""
    return frame.get("op") == "message" and not frame.get("reset")


@pytest.fixture
def beat(child_env, log_dir, celery_worker):
    env = dict(child_env, PUSH_CLOCK_INTERVAL_S="1")
    argv = [sys.executable, "-m", "celery", "-A", "project", "beat", "--loglevel", "INFO"]
    process = ChildProcess("celery-beat", argv, env, log_dir)
    yield process
    process.stop()


async def test_the_clock_job_pushes_server_time_to_both_endpoints(daphne_server, beat):
    multiplexed = await open_socket(daphne_server.ws_url("/ws/"), daphne_server.origin)
    await subscribe(multiplexed, "dashboard.clock")
    seed = await open_socket(daphne_server.ws_url("/ws/heartbeat/clock/"), daphne_server.origin)
    assert (await recv_json(seed))["msg"] == "heartbeat"

    tick = await recv_until(multiplexed, is_live_tick, timeout=30)
    assert tick["topic"] == "dashboard.clock"
    assert tick["msg"] == "clock"
    pushed_at = dt.datetime.fromisoformat(tick["data"]["server_time"])
    assert abs((dt.datetime.now(dt.UTC) - pushed_at).total_seconds()) < 30
    assert tick["data"]["uptime_s"] > 0

    seed_tick = await recv_json(seed, timeout=30)
    assert seed_tick["msg"] == "clock"
    assert set(seed_tick["data"]) == {"server_time", "uptime_s"}

    # Beat keeps ticking: the next message is the next seq.
    following = await recv_until(multiplexed, is_live_tick, timeout=30)
    assert following["seq"] == tick["seq"] + 1
    await multiplexed.close()
    await seed.close()


async def first_clock_tick(daphne_server) -> dict:
    socket = await open_socket(daphne_server.ws_url("/ws/"), daphne_server.origin)
    await subscribe(socket, "dashboard.clock")
    tick = await recv_until(socket, is_live_tick, timeout=30)
    await socket.close()
    return tick


@pytest.mark.django_db(transaction=True)
def test_the_clock_schedule_is_a_periodic_task_row_in_the_admin(daphne_server, beat):
    from django_celery_beat.models import PeriodicTask

    assert asyncio.run(first_clock_tick(daphne_server))["topic"] == "dashboard.clock"

    rows = PeriodicTask.objects.filter(name="dashboard-clock").values_list(
        "task", "interval__every", "interval__period", "enabled"
    )
    assert list(rows) == [("tasks.tasks.push_clock", 1, "seconds", True)]
