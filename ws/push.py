"""The push API: the one door to the channel layer outside consumers.

    from ws import push, apush

    push("dashboard.sales", {"total": 42})          # views, signals, tasks, shell
    await apush("dashboard.sales", {"total": 42})   # async code
    ephemeral("chat.lobby", {"type": "typing"})      # not numbered, not kept

Every message gets its topic's next sequence number (returned), is kept in the
topic's history for resume, and reaches every subscribed socket on every server
process as ``{"msg": ..., "code": ..., "data": ...}``. An ephemeral event
(typing indicators) reaches the sockets subscribed now and nothing else: no
``seq``, no history, so a resume never replays a stale one. The seed's helper
``SendMessage`` is ``ws.seed``'s, on top of ``push``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from ws import topics
from ws.protocol import encode_body, encode_data
from ws.publisher import publisher
from ws.publisher_sync import sync_publisher
from ws.store import Position, Resume

__all__ = [
    "aephemeral",
    "apush",
    "catch_up",
    "ephemeral",
    "last_pushed_at",
    "push",
    "topic_resume",
]

EPHEMERAL_EVENT_TYPE = "push.ephemeral"


def push(
    topic: str, data: Any = None, *, msg: str = "success", code: int = 200, key: str | None = None
) -> int:
    """Push ``data`` to everyone subscribed to ``topic``; return its ``seq``.

    For sync code. ``key`` makes the push idempotent: a repeat with the same key
    (a re-run task, say) within ``PUSH_HISTORY_TTL_S`` pushes nothing and returns
    the first ``seq``. Raises ``topics.UnknownTopic`` for a name no pattern knows,
    and redis-py's ``ConnectionError`` while Redis is unreachable.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError("push() called from async code: use 'await apush(...)'")
    one = _Push.prepare(topic, data, msg, code, key)
    # From this thread straight to Redis, not through the background loop.
    return sync_publisher.publish(one.topic, one.group, one.body, one.key, one.retention).seq


async def apush(
    topic: str, data: Any = None, *, msg: str = "success", code: int = 200, key: str | None = None
) -> int:
    """``push`` for async code."""
    position = await publisher.arun(_Push.prepare(topic, data, msg, code, key).publish)
    return position.seq


def _ephemeral_event(topic: str, data: Any) -> tuple[str, dict[str, Any]]:
    group = topics.group_name(topic)
    return group, {
        "type": EPHEMERAL_EVENT_TYPE,
        "topic": topics.resolve(topic).name,
        "data": encode_data(data),
    }


def ephemeral(topic: str, data: Any) -> None:
    """Send ``data`` to the sockets subscribed to ``topic`` now: not numbered, not kept.

    For what is stale a moment later (someone is typing). Subscribers on the
    multiplexed endpoint get ``{"op": "ephemeral", "topic": T, "data": D}``;
    seed-route clients get ``D`` itself, as the seed's ``chat_data`` event gave
    it. A socket that is away misses it, and a resume does not replay it.
    """
    group, event = _ephemeral_event(topic, data)
    publisher.run(lambda: publisher.send_event(group, event))


async def aephemeral(topic: str, data: Any) -> None:
    """``ephemeral`` for async code."""
    group, event = _ephemeral_event(topic, data)
    await publisher.arun(lambda: publisher.send_event(group, event))


@dataclass(frozen=True)
class _Push:
    """One push, checked and encoded in the caller's thread."""

    topic: str
    group: str
    body: str
    key: str
    retention: topics.Retention

    @classmethod
    def prepare(cls, topic: str, data: Any, msg: str, code: int, key: str | None) -> _Push:
        if key is not None and (not isinstance(key, str) or not key or len(key) > 200):
            raise ValueError("key must be a non-empty string of at most 200 characters")
        group, body = topics.group_name(topic), encode_body(data, msg, code)
        return cls(topic, group, body, key or "", topics.resolve(topic).retention)

    def publish(self) -> Awaitable[Position]:
        """The async publish call (runs on the publisher's loop)."""
        return publisher.publish(self.topic, self.group, self.body, self.key, self.retention)


async def topic_resume(
    topic: str, since: int | None, epoch: str | None, *, snapshot: bool
) -> Resume:
    """What a subscriber at (``since``, ``epoch``) missed: all of it, or a reset."""
    group, retention = topics.group_name(topic), topics.resolve(topic).retention
    return await publisher.arun(
        lambda: publisher.resume(topic, group, since, epoch, snapshot, retention)
    )


def last_pushed_at(topic: str) -> float | None:
    """When ``topic``'s newest kept message was pushed (epoch seconds), or None."""
    group = topics.group_name(topic)
    return publisher.run(lambda: publisher.last_pushed_at(topic, group))


async def catch_up(topic: str, held: Position, *, snapshot: bool) -> Resume:
    """What a socket that was sent ``held`` is owed now: the missed messages, or a reset.

    When the topic's epoch changed (its history was lost and numbering began
    again), the new history is replayed from its start if all of it is kept:
    what was pushed since the loss is not lost as well.
    """
    resume = await topic_resume(topic, held.seq, held.epoch, snapshot=snapshot)
    if not resume.recovered and resume.position.epoch != held.epoch:
        return await topic_resume(topic, 0, resume.position.epoch, snapshot=snapshot)
    return resume
