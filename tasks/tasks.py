"""Celery tasks that push. They take names and ids, and retry while Redis is away:
first in their own process, then through Celery (``ws.tasks``)."""

from __future__ import annotations

from celery import shared_task

from ws.tasks import RETRY_POLICY, patient_with_redis


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
