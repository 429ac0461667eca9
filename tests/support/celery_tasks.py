"""Tasks the test worker loads (``--include``) to put a push in the middle of a task."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import redis
from celery import Task, shared_task
from django.conf import settings

from ws import push
from ws.tasks import RETRY_POLICY, patient_with_redis


@shared_task(name="tests.push_then_work", bind=True)
def push_then_work(self: Task, topic: str, data: Any) -> int:
    """Push as the publish task does (keyed by the task id), then go on working.

    The first run records its process id and blocks, as long work would, so a
    test can kill its process mid-task; later runs return at once.
    """
    seq = push(topic, data, key=f"task:{self.request.id}")
    client = redis.Redis.from_url(settings.REDIS_URL)
    run = client.incr(f"test:{self.request.id}:runs")
    if run == 1:
        client.rpush(f"test:{self.request.id}:pid", os.getpid())
        client.blpop([f"test:{self.request.id}:never"], timeout=120)
    client.close()
    return seq


@shared_task(name="tests.publish_when_released", bind=True, **RETRY_POLICY)
@patient_with_redis
def publish_when_released(self: Task, topic: str, data: Any, started: str, release: str) -> int:
    """The publish task's body, reached only once the file ``release`` exists.

    Touches ``started`` first, so a test can stop Redis while the task is running
    and then let it push into the outage.
    """
    Path(started).touch()
    while not Path(release).exists():
        time.sleep(0.02)
    return push(topic, data, key=f"task:{self.request.id}")
