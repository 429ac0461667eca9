"""How many sockets are open, and subscribed to what, across every server process.

Each server process counts its own sockets in memory (consumers call
``opened``/``closed``/``joined``/``left``) and its layer watch writes the
counts to Redis every ``PUSH_LAYER_CHECK_S``, in a hash of its own that expires
after a few periods: a process that dies drops out of the census by itself.
Readers (a broadcast recording its audience, the system dashboard) sum the
hashes. The figures are as old as one check period at most.

Whether a topic has any subscriber at all, right now, is exact and cheaper:
``is_watched`` asks Redis how many server processes subscribe to the topic's
group channel (the pub/sub layer subscribes while a process has a member).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections import Counter
from typing import Any

from ws import keys, topics
from ws.conf import push_settings
from ws.publisher import publisher

__all__ = ["census", "is_watched", "open_sockets", "subscribers"]

# Every process's census hash.
PATTERN = keys.census("*")
SOCKETS_FIELD = "_sockets"


class Census:
    """This process's sockets: how many, and how many per topic."""

    def __init__(self) -> None:
        self.key = keys.census(f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}")
        self.sockets = 0
        self.per_topic: Counter[str] = Counter()

    def opened(self) -> None:
        self.sockets += 1

    def closed(self) -> None:
        self.sockets -= 1

    def joined(self, topic: str) -> None:
        self.per_topic[topic] += 1

    def left(self, topic: str) -> None:
        self.per_topic[topic] -= 1
        if self.per_topic[topic] <= 0:
            del self.per_topic[topic]

    async def write(self, ttl_s: float) -> None:
        """Replace this process's hash in Redis with its counts (on the publisher's loop)."""
        counts: dict[str, Any] = {SOCKETS_FIELD: self.sockets, **self.per_topic}
        await publisher.arun(lambda: publisher.replace_hash(self.key, counts, ttl_s))


census = Census()


def _sum_field(field: str) -> int:
    hashes = publisher.run(lambda: publisher.hashes_matching(PATTERN, field))
    return sum(int(value) for value in hashes if value is not None)


def subscribers(topic: str) -> int:
    """Sockets subscribed to ``topic`` on every server process (as of the last check)."""
    return _sum_field(topics.resolve(topic).name)


def open_sockets() -> int:
    """Sockets open on every server process (as of the last check)."""
    return _sum_field(SOCKETS_FIELD)


def is_watched(topic: str) -> bool:
    """Whether any server process has a socket subscribed to ``topic`` now."""
    group = topics.group_name(topic)
    return publisher.run(lambda: publisher.group_listeners(group)) > 0


def census_ttl_s() -> float:
    """How long a process's hash outlives its last write: three check periods."""
    return 3 * push_settings.PUSH_LAYER_CHECK_S + 1
