"""Pushes from the test process to a stack's own Redis, as a worker's publish task makes them."""

from __future__ import annotations

import time
from typing import Any

from django.test import override_settings
from redis.exceptions import RedisError

from ws import topics
from ws.protocol import encode_body
from ws.publisher import Publisher
from ws.store import Position

RETRY_BACKOFF_S = (0.05, 0.1, 0.2, 0.4)


class KeyedPusher:
    """A publisher of its own on ``hosts`` (the channel layer's host entries or URLs).

    Each push is keyed by its topic and data, like the publish task's by its task id:
    one whose reply was lost is not made twice when it is sent again.
    """

    def __init__(self, hosts: list[Any]) -> None:
        self.layers = {
            "default": {"BACKEND": "ws.layer.PushChannelLayer", "CONFIG": {"hosts": hosts}}
        }
        self.publisher = Publisher()

    def push(self, topic: str, data: Any, msg: str = "success") -> Position:
        """Push once; raises redis-py's error if Redis is away."""
        group, body = topics.group_name(topic), encode_body(data, msg, 200)
        with override_settings(CHANNEL_LAYERS=self.layers):
            return self.publisher.run(
                lambda: self.publisher.publish(topic, group, body, key=f"{topic}:{data!r}")
            )

    def push_until_done(self, topic: str, data: Any, msg: str = "success") -> Position:
        """Push, sent again with backoff while Redis is away (for up to about two minutes)."""
        for attempt in range(300):
            try:
                return self.push(topic, data, msg)
            except (RedisError, OSError):
                time.sleep(RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)])
        raise AssertionError(f"push {data!r} to {topic} never went through")
