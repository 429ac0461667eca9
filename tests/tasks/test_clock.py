"""The clock dashboard (tasks/clock.py): computed by a real worker, on its topic and the
seed route."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import psutil

from tasks.clock import clock
from tasks.registry import get
from tasks.tasks import refresh_dashboard
from tests.support.clients import open_socket, recv_json, recv_until, subscribe
from tests.support.waiting import poll_until

TOPIC = "dashboard.clock"


def is_live_tick(frame: dict[str, Any]) -> bool:
    """A clock message pushed now, not the snapshot a new subscriber is given first."""
    return frame.get("op") == "message" and frame.get("topic") == TOPIC and not frame.get("reset")


def is_recent(iso: str) -> bool:
    return abs((dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(iso)).total_seconds()) < 30


def test_the_clock_is_the_time_it_is_given_and_the_hosts_uptime():
    now = dt.datetime.now(dt.UTC)
    assert clock(now) == {
        "server_time": now.isoformat(timespec="milliseconds"),
        "uptime_s": int(now.timestamp() - psutil.boot_time()),
    }


async def test_a_run_beat_asks_for_reaches_the_topic_and_the_seed_route(
    daphne_server, celery_worker
):
    multiplexed = await open_socket(daphne_server.ws_url("/ws/"), daphne_server.origin)
    await subscribe(multiplexed, TOPIC)
    seed = await open_socket(daphne_server.ws_url("/ws/heartbeat/clock/"), daphne_server.origin)
    assert (await recv_json(seed))["msg"] == "heartbeat"

    refresh_dashboard.delay("clock")  # what beat sends for the dashboard-clock row

    tick = await recv_until(multiplexed, is_live_tick, timeout=30)
    assert tick["msg"] == "dashboard"
    data = tick["data"]
    assert set(data) == {"server_time", "uptime_s", "computed_at", "next_due"}
    assert is_recent(data["server_time"])
    assert data["uptime_s"] > 0
    period = dt.datetime.fromisoformat(data["next_due"]) - dt.datetime.fromisoformat(
        data["computed_at"]
    )
    assert period == dt.timedelta(seconds=get("clock").every_s)

    # The seed's clients get the same reading in the seed's envelope, as they always did.
    seed_tick = await recv_json(seed, timeout=30)
    assert (seed_tick["msg"], seed_tick["code"]) == ("clock", 200)
    assert set(seed_tick["data"]) == {"server_time", "uptime_s"}
    assert is_recent(seed_tick["data"]["server_time"])
    await multiplexed.close()
    await seed.close()


async def test_a_seed_route_socket_alone_gets_the_clock(daphne_server, celery_worker, redis_client):
    # Nobody on the topic: the seed room's socket is the clock's only audience.
    await asyncio.to_thread(
        poll_until,
        lambda: redis_client.pubsub_numsub(f"asgi__group__{TOPIC}")[0][1] == 0,
        30,
        "server left the clock's group",
    )
    seed = await open_socket(daphne_server.ws_url("/ws/heartbeat/clock/"), daphne_server.origin)
    assert (await recv_json(seed))["msg"] == "heartbeat"

    refresh_dashboard.delay("clock")

    seed_tick = await recv_json(seed, timeout=30)
    assert seed_tick["msg"] == "clock"
    assert is_recent(seed_tick["data"]["server_time"])
    await seed.close()
