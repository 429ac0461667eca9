"""Pushing from Celery: the retry policy, patience with a short Redis outage, and ``publish``.

Part of the push API: any project's tasks that push use them.

    from ws.tasks import RETRY_POLICY, patient_with_redis, publish

    publish.delay("dashboard.sales", {"total": 42})   # from anywhere: a worker pushes it

    @shared_task(**RETRY_POLICY)
    @patient_with_redis
    def my_task(...): push(...)

Patience, before Celery's retry is needed: Celery's ``autoretry_for`` answers a
failed push by publishing a retry message to the broker, which is the same Redis.
Just after Redis restarts it answers "LOADING" while it reads its append-only
file, and a retry published in that moment fails: Celery then rejects the task
without requeueing it, and the push is lost. So a task first waits for Redis
itself, with backoff, and runs its body again in the same process (pushes are
keyed, so a second run pushes nothing twice). Only an outage longer than
``PUSH_TASK_PATIENCE_S`` falls through to Celery's retry.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from celery import Task, shared_task
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ws.conf import push_settings
from ws.push import push

logger = logging.getLogger("ws")

P = ParamSpec("P")
R = TypeVar("R")

FIRST_PAUSE_S = 0.1
LONGEST_PAUSE_S = 2.0


def patient_with_redis(body: Callable[P, R]) -> Callable[P, R]:
    """Run ``body`` again while Redis is away, for up to ``PUSH_TASK_PATIENCE_S`` seconds."""

    @functools.wraps(body)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        deadline = time.monotonic() + push_settings.PUSH_TASK_PATIENCE_S
        pause = FIRST_PAUSE_S
        while True:
            try:
                return body(*args, **kwargs)
            except (RedisConnectionError, RedisTimeoutError) as error:
                if time.monotonic() + pause > deadline:
                    raise  # a long outage: Celery's retry takes over
                logger.warning(
                    "%s: Redis is away (%s); running it again in %.1f s",
                    body.__name__,
                    error,
                    pause,
                )
                time.sleep(pause)
                pause = min(pause * 2, LONGEST_PAUSE_S)

    return run


# Celery's own retry, for an outage longer than the task's patience: with backoff and jitter.
RETRY_POLICY: dict[str, Any] = {
    "autoretry_for": (RedisConnectionError, RedisTimeoutError),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 8,
}


@shared_task(name="ws.publish", bind=True, **RETRY_POLICY)
@patient_with_redis
def publish(self: Task, topic: str, data: Any = None, msg: str = "success", code: int = 200) -> int:
    """Push ``data`` to ``topic`` from a worker; returns the message's ``seq``.

    Keyed by the task's id: a redelivered task (its worker died after pushing,
    before acknowledging) does not push the same event twice.
    """
    return push(topic, data, msg=msg, code=code, key=f"task:{self.request.id}")
