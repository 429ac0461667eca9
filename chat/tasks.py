"""Chat's Celery tasks: the timeout of a call nobody answers."""

from __future__ import annotations

from celery import shared_task

from tasks.patience import patient_with_redis
from tasks.tasks import RETRY_POLICY


@shared_task(name="chat.tasks.end_unanswered_call", ignore_result=True, **RETRY_POLICY)
@patient_with_redis
def end_unanswered_call(call_id: int, created_at: str | None = None) -> int | None:
    """End call ``call_id`` if it still rings (``unanswered``); scheduled by the invite.

    Scheduled with a countdown of ``CALL_RING_TIMEOUT_S``: whichever worker takes
    it ends the call under the room's lock, once; a call answered, cancelled or
    declined meanwhile is left alone, so a re-run does nothing.
    """
    from chat import calls

    return calls.end_unanswered(call_id, created_at)
