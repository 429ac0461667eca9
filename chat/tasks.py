"""Chat's Celery tasks: the timeout of a call nobody answers, the end of a participant's
grace period, and the sweep of calls."""

from __future__ import annotations

from celery import shared_task

from ws.tasks import RETRY_POLICY, patient_with_redis


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


@shared_task(name="chat.tasks.sweep_calls", ignore_result=True, **RETRY_POLICY)
@patient_with_redis
def sweep_calls() -> int:
    """Take out of live calls those with no live socket on the call's topic; how many.

    Beat runs it every ``CALL_SWEEP_S`` (``CELERY_BEAT_SCHEDULE``), for the calls
    whose every server process died: nobody is left to sweep their presence.
    Each removal is a ``participant_gone`` under the room's lock, so a re-run,
    or two at once, change nothing more.
    """
    from chat import calls

    return calls.sweep_gone()


@shared_task(name="chat.tasks.end_rejoin_grace", ignore_result=True, **RETRY_POLICY)
@patient_with_redis
def end_rejoin_grace(call_id: int, user_id: int, since: str) -> int | None:
    """Take ``user_id`` out of call ``call_id`` if still reconnecting since ``since``.

    Scheduled with a countdown of ``CALL_REJOIN_GRACE_S`` when their last socket
    went; one who came back meanwhile is left alone, so a re-run does nothing.
    """
    from chat import calls

    return calls.grace_over(call_id, user_id, since)
