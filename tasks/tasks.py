"""Celery tasks that push. They take names and ids, and retry while Redis is away:
first in their own process (``tasks/patience.py``), then through Celery."""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tasks.clock import clock_reading
from tasks.patience import patient_with_redis
from ws import SendMessage, push

CLOCK_TOPIC = "dashboard.clock"

RETRY_POLICY: dict[str, Any] = {
    "autoretry_for": (RedisConnectionError, RedisTimeoutError),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 8,
}


@shared_task(name="tasks.tasks.publish", bind=True, **RETRY_POLICY)
@patient_with_redis
def publish(self: Task, topic: str, data: Any = None, msg: str = "success", code: int = 200) -> int:
    """Push ``data`` to ``topic`` from a worker; returns the message's ``seq``.

    Keyed by the task's id: a redelivered task (its worker died after pushing,
    before acknowledging) does not push the same event twice.
    """
    return push(topic, data, msg=msg, code=code, key=f"task:{self.request.id}")


@shared_task(name="tasks.tasks.push_clock", ignore_result=True, **RETRY_POLICY)
@patient_with_redis
def push_clock() -> int:
    """Push the server time and uptime to ``dashboard.clock`` (and the seed clock room)."""
    reading = clock_reading()
    seq = push(CLOCK_TOPIC, reading, msg="clock")
    if settings.PUSH_CLOCK_SEED_ROOM:
        SendMessage(settings.PUSH_CLOCK_SEED_ROOM).send(
            {"code": 200, "msg": "clock", "data": reading}
        )
    return seq


@shared_task(name="tasks.tasks.deliver_broadcast", **RETRY_POLICY)
@patient_with_redis
def deliver_broadcast(broadcast_id: int) -> int:
    """Send an admin broadcast once; returns how many sockets were subscribed (0 if sent before)."""
    from tasks import broadcasts  # it imports this module (and the models) itself

    return broadcasts.deliver(broadcast_id)


@shared_task(name="tasks.tasks.send_due_broadcasts", ignore_result=True, **RETRY_POLICY)
@patient_with_redis
def send_due_broadcasts() -> int:
    """Queue delivery of the broadcasts whose ``send_at`` has passed (beat runs it)."""
    from tasks import broadcasts

    return broadcasts.send_due()


@shared_task(name="tasks.tasks.refresh_dashboard", ignore_result=True, **RETRY_POLICY)
@patient_with_redis
def refresh_dashboard(name: str, coalesced: bool = False) -> int | None:
    """Recompute dashboard ``name`` and push it, unless nobody subscribes anywhere.

    Beat runs it on the dashboard's schedule; model changes run it ``coalesced``
    (see ``tasks.dashboards.request_refresh``).
    """
    from tasks import dashboards

    return dashboards.run_refresh(name, coalesced=coalesced)
