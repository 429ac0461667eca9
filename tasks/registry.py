"""Dashboards: declared once in code, computed in workers, pushed to ``dashboard.<name>``.

A dashboard is a name, a compute function (a pure function of the database
returning JSON-able data), the models it watches and, optionally, a schedule::

    @dashboard("orders", watches=[Order], public=True)
    def orders() -> dict: ...

    @dashboard("sales", every_s=5)
    def sales() -> dict: ...

    @dashboard("clock", every_s=lambda: settings.PUSH_CLOCK_INTERVAL_S, seed_room="clock")
    def clock() -> dict: ...  # also sent to the seed route heartbeat/clock/

Changes to a watched model recompute it after commit (``tasks/signals.py``),
coalesced across every process to at most one recompute per
``DASHBOARD_COALESCE_MS`` with the final state always pushed; a schedule
recomputes it from beat (``tasks/beat.py``). Either way nothing is computed
while no socket anywhere subscribes, and the first subscriber of a stale
dashboard gets a fresh value at once. Every message carries ``computed_at``
and ``next_due`` (ISO 8601, UTC; ``next_due`` is null without a schedule) so
pages can tell when updates stopped. A period or seed room given as a function
is read at each use, so it may come from a setting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models

from ws import topics
from ws.census import is_watched
from ws.conf import redis_key
from ws.publisher import run_script
from ws.push import last_pushed_at, push

__all__ = ["Dashboard", "dashboard", "get", "registered", "watching"]

logger = logging.getLogger("tasks")

Compute = Callable[[], dict[str, Any]]
Period = int | Callable[[], float]
SeedRoom = str | Callable[[], str]
DASHBOARD_MSG = "dashboard"


@dataclass(frozen=True)
class Dashboard:
    """One dashboard: what it computes, what it watches, how often it runs."""

    name: str
    compute: Compute
    watches: tuple[type[models.Model], ...] = ()
    period: Period | None = None
    seed_room_of: SeedRoom = ""

    @property
    def topic(self) -> str:
        return f"dashboard.{self.name}"

    @property
    def every_s(self) -> int | None:
        """Seconds between scheduled runs (whole, at least 1), or None without a schedule."""
        every = self.period() if callable(self.period) else self.period
        return None if every is None else max(1, round(float(every)))

    @property
    def seed_room(self) -> str:
        """The seed room that gets each value too (the seed route), or "" for none."""
        return self.seed_room_of() if callable(self.seed_room_of) else self.seed_room_of


_REGISTRY: dict[str, Dashboard] = {}


def dashboard(
    name: str,
    *,
    watches: Iterable[type[models.Model]] = (),
    every_s: Period | None = None,
    public: bool = False,
    subscribe: topics.Rule | None = None,
    seed_room: SeedRoom = "",
) -> Callable[[Compute], Compute]:
    """Declare the decorated function as dashboard ``name``'s compute function.

    Who may subscribe: ``subscribe`` (a rule of ``ws.topics``), anyone when
    ``public``, else the ``ws.view_dashboard`` permission (the topic pattern's).
    ``every_s`` may be a function (of a setting, say), read when beat syncs and at
    each push, its value rounded to whole seconds. ``seed_room``, a name or a
    function giving one (empty: none), also gets each value on the seed route
    ``heartbeat/<room>/``, in the seed's envelope: ``msg`` the dashboard's name,
    ``data`` the computed figures alone.
    """
    fixed = every_s is not None and not callable(every_s)
    if fixed and (not isinstance(every_s, int) or every_s < 1):
        raise ValueError("every_s is a whole number of seconds (or a function), at least 1")

    def register(compute: Compute) -> Compute:
        entry = Dashboard(name, compute, tuple(watches), every_s, seed_room)
        topics.resolve(entry.topic)  # a valid topic name, or UnknownTopic now
        _REGISTRY[name] = entry
        rule = subscribe or (topics.anyone if public else None)
        if rule is not None:
            topics.declare(entry.topic, subscribe=rule)
        return compute

    return register


def get(name: str) -> Dashboard:
    return _REGISTRY[name]


def is_registered(name: str) -> bool:
    return name in _REGISTRY


def registered() -> list[Dashboard]:
    return list(_REGISTRY.values())


def watching(model: type[models.Model]) -> list[Dashboard]:
    """The dashboards that recompute when ``model`` changes."""
    return [entry for entry in _REGISTRY.values() if model in entry.watches]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def compute_and_push(entry: Dashboard) -> int:
    """Compute the dashboard now and push it, with its freshness; return the ``seq``."""
    figures = entry.compute()
    data = dict(figures)
    now = datetime.now(UTC)
    every_s = entry.every_s
    data["computed_at"] = _iso(now)
    data["next_due"] = _iso(now + timedelta(seconds=every_s)) if every_s else None
    seq = push(entry.topic, data, msg=DASHBOARD_MSG)
    if room := entry.seed_room:
        # Seed clients get the seed's envelope, which labels data by its ``msg`` alone.
        push(topics.seed_room_topic(room), figures, msg=entry.name)
    return seq


def _is_watched(entry: Dashboard) -> bool:
    """Whether any socket anywhere would get a recompute: on its topic or its seed room."""
    room = entry.seed_room
    return is_watched(entry.topic) or bool(room and is_watched(topics.seed_room_topic(room)))


# --- coalescing, across every process (one Redis script per step) ----------------------------

# KEYS: pending (a change not yet computed), scheduled (a run is queued), last (ms of the
# last run), dirty (changes skipped while nobody watched). All under the dashboard's
# hash tag, so on one Cluster slot, and under PUSH_KEY_PREFIX like ws's own keys.
COALESCING_PARTS = ("pending", "scheduled", "last", "dirty")


def coalescing_key(name: str, part: str) -> str:
    """The Redis key of dashboard ``name``'s coalescing state ``part`` (COALESCING_PARTS)."""
    return redis_key("dash", f"{{{name}}}", part)


def _keys(name: str) -> list[str]:
    return [coalescing_key(name, part) for part in COALESCING_PARTS]


# ARGV[1] now (ms), ARGV[2] interval (ms), ARGV[3] safety expiry of "scheduled" (ms).
# Returns the delay (ms) after which to queue a run, or -1 when one is queued already.
_REQUEST_LUA = """
redis.call('SET', KEYS[1], '1')
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then
  return -1
end
local last = tonumber(redis.call('GET', KEYS[3]) or 0)
local wait = last + tonumber(ARGV[2]) - tonumber(ARGV[1])
if wait < 0 then wait = 0 end
return wait
"""

# A run ends: note its time, free the slot, and queue the next run when changes came
# in meanwhile. Returns the delay (ms) for that run, or -1.
_FINISH_LUA = """
redis.call('SET', KEYS[3], ARGV[1], 'PX', 86400000)
redis.call('DEL', KEYS[2])
if redis.call('EXISTS', KEYS[1]) == 1 and redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then
  return tonumber(ARGV[2])
end
return -1
"""


def _interval_ms() -> int:
    return int(settings.DASHBOARD_COALESCE_MS)


def _on_keys(name: str, lua: str) -> Any:
    """Run a one-line script on the dashboard's keys (KEYS[1] pending … KEYS[4] dirty)."""
    return run_script(lua, _keys(name), [])


def _script(lua: str, name: str) -> int:
    args = [int(time.time() * 1000), _interval_ms(), 60_000]
    return int(run_script(lua, _keys(name), args))


def request_refresh(name: str) -> None:
    """Ask for a recompute of ``name`` soon: coalesced, never lost (call after commit)."""
    delay_ms = _script(_REQUEST_LUA, name)
    if delay_ms >= 0:
        _queue(name, delay_ms)


def _queue(name: str, delay_ms: int) -> None:
    from tasks.tasks import refresh_dashboard

    refresh_dashboard.apply_async(
        args=[name], kwargs={"coalesced": True}, countdown=delay_ms / 1000
    )


def run_refresh(name: str, *, coalesced: bool) -> int | None:
    """A worker's recompute of ``name``: skipped (None) while nobody subscribes anywhere."""
    entry = get(name)
    if coalesced:  # the changes seen so far are all in this computation
        _on_keys(name, "return redis.call('DEL', KEYS[1])")
    try:
        if not _is_watched(entry):
            # Nobody to show it to: remember it is out of date for the first subscriber.
            _on_keys(name, "return redis.call('SET', KEYS[4], '1')")
            logger.debug("dashboard %s not computed: no subscriber", name)
            return None
        _on_keys(name, "return redis.call('DEL', KEYS[4])")
        return compute_and_push(entry)
    finally:
        if coalesced:
            delay_ms = _script(_FINISH_LUA, name)
            if delay_ms >= 0:
                _queue(name, delay_ms)


def refresh_if_stale(name: str) -> bool:
    """For a new subscriber: queue a recompute when the last value is missing or old.

    Old means: changes were skipped while nobody watched, or a scheduled dashboard's
    value is older than its period.
    """
    entry = get(name)
    dirty = _on_keys(name, "return redis.call('EXISTS', KEYS[4])")
    pushed_at = last_pushed_at(entry.topic)
    stale = (
        bool(dirty)
        or pushed_at is None
        or (entry.every_s is not None and time.time() - pushed_at > entry.every_s)
    )
    if stale:
        request_refresh(name)
    return stale
