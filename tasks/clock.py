"""The clock reading that beat pushes to ``dashboard.clock``."""

from __future__ import annotations

import datetime as dt
from typing import TypedDict

import psutil


class ClockReading(TypedDict):
    server_time: str
    uptime_s: int


def clock_reading(now: dt.datetime | None = None) -> ClockReading:
    """The server's time (ISO 8601, UTC) and how long the host has been up."""
    now = now or dt.datetime.now(dt.UTC)
    return {
        "server_time": now.isoformat(timespec="milliseconds"),
        "uptime_s": int(now.timestamp() - psutil.boot_time()),
    }
