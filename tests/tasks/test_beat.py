"""Beat's schedules, from the database: the clock dashboard's job, pushed by the worker;
code schedules synced to rows; admin edits applied live."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import sys
import time

import pytest

from tasks.registry import get
from tests.support.clients import open_socket, recv_json, recv_until, subscribe
from tests.support.processes import ChildProcess
from tests.support.users import in_thread


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
    """Beat's ``dashboard-clock`` row runs the clock dashboard: a tick on its topic and
    one on the seed route, and the next a second later (``PUSH_CLOCK_INTERVAL_S=1``)."""
    multiplexed = await open_socket(daphne_server.ws_url("/ws/"), daphne_server.origin)
    await subscribe(multiplexed, "dashboard.clock")
    seed = await open_socket(daphne_server.ws_url("/ws/heartbeat/clock/"), daphne_server.origin)
    assert (await recv_json(seed))["msg"] == "heartbeat"

    tick = await recv_until(multiplexed, is_live_tick, timeout=30)
    assert tick["topic"] == "dashboard.clock"
    assert tick["msg"] == "dashboard"
    assert tick["data"]["computed_at"].endswith("Z")
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


async def beat_clock_ticks(daphne_server) -> list[dict]:
    """Three live clock ticks: at least two from beat (a subscription asks for one more)."""
    socket = await open_socket(daphne_server.ws_url("/ws/"), daphne_server.origin)
    await subscribe(socket, "dashboard.clock")
    ticks = [await recv_until(socket, is_live_tick, timeout=30) for _ in range(3)]
    await socket.close()
    return ticks


@pytest.mark.django_db(transaction=True)
def test_the_clock_schedule_is_a_periodic_task_row_in_the_admin(daphne_server, beat):
    from django_celery_beat.models import PeriodicTask

    ticks = asyncio.run(beat_clock_ticks(daphne_server))
    assert {tick["topic"] for tick in ticks} == {"dashboard.clock"}

    rows = PeriodicTask.objects.filter(name="dashboard-clock").values_list(
        "task", "args", "interval__every", "interval__period", "enabled"
    )
    assert list(rows) == [("tasks.tasks.refresh_dashboard", '["clock"]', 1, "seconds", True)]


@pytest.mark.django_db
def test_code_schedules_become_rows_and_admin_edits_survive_a_resync():
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from tasks.beat import code_schedules, sync_schedules

    sync_schedules(code_schedules())
    names = set(PeriodicTask.objects.values_list("name", flat=True))
    assert {"dashboard-clock", "dashboard-sales", "dashboard-system"} <= names
    sales = PeriodicTask.objects.get(name="dashboard-sales")
    assert (sales.task, sales.args, sales.interval.every) == (
        "tasks.tasks.refresh_dashboard",
        '["sales"]',
        5,
    )

    # An admin slows it down and switches it off; beat restarts and syncs again.
    sales.interval, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    sales.enabled = False
    sales.save()
    assert sync_schedules(code_schedules()) == (0, 0)
    sales.refresh_from_db()
    assert (sales.interval.every, sales.enabled) == (60, False)


@pytest.mark.django_db
def test_the_row_of_the_old_clock_task_becomes_the_clock_dashboards_keeping_admin_edits():
    """A database from before the clock was a dashboard: its row ran ``push_clock``."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from tasks.beat import code_schedules, sync_schedules

    every_30, _ = IntervalSchedule.objects.get_or_create(every=30, period="seconds")
    PeriodicTask.objects.create(
        name="dashboard-clock",
        task="tasks.tasks.push_clock",
        interval=every_30,
        enabled=False,
    )

    sync_schedules(code_schedules())
    row = PeriodicTask.objects.get(name="dashboard-clock")
    assert (row.task, row.args, row.expire_seconds) == (
        "tasks.tasks.refresh_dashboard",
        '["clock"]',
        get("clock").every_s,  # a late tick is worthless once the next is due
    )
    assert (row.interval.every, row.enabled) == (30, False)


def live_gaps(frames: list[tuple[float, dict]]) -> list[float]:
    times = [at for at, frame in frames]
    return [later - earlier for earlier, later in itertools.pairwise(times)]


async def live_system_pushes(socket, count: int) -> list[tuple[float, dict]]:
    frames = []
    while len(frames) < count:
        frame = await recv_until(socket, is_live_tick, timeout=30)
        frames.append((time.monotonic(), frame))
    return frames


@pytest.mark.django_db(transaction=True)
async def test_an_admin_change_of_interval_or_switch_takes_effect_without_a_restart(
    daphne_server, beat
):
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    socket = await open_socket(daphne_server.ws_url("/ws/"), daphne_server.origin)
    await subscribe(socket, "dashboard.system")
    assert max(live_gaps(await live_system_pushes(socket, 3))) > 1.5  # every 2 s

    def set_interval(every: int, enabled: bool = True) -> None:
        row = PeriodicTask.objects.get(name="dashboard-system")
        row.interval, _ = IntervalSchedule.objects.get_or_create(every=every, period="seconds")
        row.enabled = enabled
        row.save()

    await in_thread(set_interval, 5)
    # Beat notices the edit within its loop (at most 5 s): then pushes come 5 s apart.
    async with asyncio.timeout(60):
        while min(live_gaps(await live_system_pushes(socket, 2))) < 4:
            pass

    await in_thread(set_interval, 5, False)
    # Switched off: after the ticks already under way, the pushes stop.
    async with asyncio.timeout(60):
        while True:
            try:
                await recv_until(socket, is_live_tick, timeout=12)
            except TimeoutError:
                break
    await socket.close()
