"""Tasks only the benchmarks' worker loads (``celery worker --include bench.tasks_bench``).

``push_loop`` pushes ``count`` messages one after another from inside a worker
process and returns how long that took there, for two publish paths:

- ``"ours"``: ``ws.push.push(topic, data)``, numbered and stored for resume
  as in production, over the process's one background loop and Redis client;
- ``"ours_many"``: the same messages through ``ws.push_many``, ``batch`` at a time
  (one round trip to Redis per batch);
- ``"seed"``: the seed's ``async_to_sync(SendMessage(room).send)(...)``, one
  ``async_to_sync`` per push, with the seed's ``SendMessage`` and channel layer
  from ``bench/reference`` (the core ``RedisChannelLayer`` with
  ``symmetric_encryption_keys``).
"""

from __future__ import annotations

import importlib
import sys
import time
from pathlib import Path
from typing import Any

from asgiref.sync import async_to_sync
from celery import shared_task
from channels_redis.core import RedisChannelLayer
from django.utils.module_loading import import_string

from ws import push, push_many

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
BENCH_TOPIC = "dashboard.bench"
SEED_ROOM = "bench"


def seed_layer() -> RedisChannelLayer:
    """The seed's ``CHANNEL_LAYERS['default']`` as ``bench/reference`` writes it.

    Core ``RedisChannelLayer``, the seed's hosts and ``symmetric_encryption_keys``.
    Its settings module is only read here (this worker runs this project's settings).
    """
    if str(REFERENCE_DIR) not in sys.path:
        sys.path.insert(0, str(REFERENCE_DIR))
    layer = importlib.import_module("seedproject.settings").CHANNEL_LAYERS["default"]
    return import_string(layer["BACKEND"])(**layer["CONFIG"])


def seed_sender(room: str, layer: RedisChannelLayer) -> Any:
    """The seed's own ``SendMessage(room)`` (``bench/reference/seedws/send.py``) on ``layer``.

    The seed's class takes ``get_channel_layer()``, which in this worker is this
    project's layer: its instance is pointed at the seed's layer instead.
    """
    if str(REFERENCE_DIR) not in sys.path:
        sys.path.insert(0, str(REFERENCE_DIR))
    sender = importlib.import_module("seedws.send").SendMessage(room)
    sender.channel_layer = layer
    return sender


def _payload(n: int) -> dict[str, Any]:
    # A small dashboard-like figure (the same for both paths).
    return {"n": n, "total": 1000 + n, "label": "orders today", "at": time.time()}


@shared_task(name="bench.push_loop")
def push_loop(variant: str, count: int, batch: int = 100) -> dict[str, Any]:
    """Push ``count`` messages back to back; the time that took in this process.

    One push first, not timed, for each path: ours makes its loop and client
    once per process, the seed makes them on every push anyway.
    """
    if variant == "ours":
        push(BENCH_TOPIC, _payload(-1))
        started = time.perf_counter()
        for n in range(count):
            push(BENCH_TOPIC, _payload(n))
        elapsed = time.perf_counter() - started
    elif variant == "ours_many":
        push_many([(BENCH_TOPIC, _payload(-1))])
        started = time.perf_counter()
        for first in range(0, count, batch):
            push_many([(BENCH_TOPIC, _payload(n)) for n in range(first, min(count, first + batch))])
        elapsed = time.perf_counter() - started
    elif variant == "seed":
        layer = seed_layer()
        # One member in the room, so group_send does its whole job (a socket would be one).
        async_to_sync(layer.group_add)(f"chat_{SEED_ROOM}", "bench.member!seed")
        async_to_sync(seed_sender(SEED_ROOM, layer).send)(
            {"chat_type": "chat_data", **_payload(-1)}
        )
        started = time.perf_counter()
        for n in range(count):
            # As seed code calls it from a task: a new SendMessage and async_to_sync per push.
            async_to_sync(seed_sender(SEED_ROOM, layer).send)(
                {"chat_type": "chat_data", **_payload(n)}
            )
        elapsed = time.perf_counter() - started
    else:
        raise ValueError(f"variant must be 'ours', 'ours_many' or 'seed', not {variant!r}")
    return {"pushes": count, "elapsed_s": elapsed}
