"""The ``clock`` dashboard: the server's time and how long the host has been up.

Beat recomputes it every ``PUSH_CLOCK_INTERVAL_S`` seconds (the ``dashboard-clock``
row in the admin); it is pushed to ``dashboard.clock``, which anyone may subscribe
to, and to the seed room ``PUSH_CLOCK_SEED_ROOM`` (the seed route ``heartbeat/clock/``).
"""

from __future__ import annotations

import datetime as dt
from typing import TypedDict

import psutil
from django.conf import settings

from tasks.registry import dashboard

__all__ = ["ClockReading", "clock"]


class ClockReading(TypedDict):
    server_time: str
    uptime_s: int


@dashboard(
    "clock",
    every_s=lambda: settings.PUSH_CLOCK_INTERVAL_S,
    public=True,  # the server's time is no secret: every page may show it
    seed_room=lambda: settings.PUSH_CLOCK_SEED_ROOM,
)
def clock(now: dt.datetime | None = None) -> ClockReading:
    """The server's time (ISO 8601, UTC) and how long the host has been up."""
    now = now or dt.datetime.now(dt.UTC)
    return {
        "server_time": now.isoformat(timespec="milliseconds"),
        "uptime_s": int(now.timestamp() - psutil.boot_time()),
    }
