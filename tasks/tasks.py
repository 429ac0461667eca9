"""Celery tasks that push. They take names and ids, and retry while Redis is away:
first in their own process, then through Celery (``ws.tasks``)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from tasks.clock import clock_reading
from ws import SendMessage, push
from ws.tasks import RETRY_POLICY, patient_with_redis

CLOCK_TOPIC = "dashboard.clock"


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
    (see ``tasks.registry.request_refresh``).
    """
    from tasks import registry

    return registry.run_refresh(name, coalesced=coalesced)
