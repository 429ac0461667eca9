"""The push API: the one door to the channel layer outside consumers.

    from ws import push, apush

    push("dashboard.sales", {"total": 42})          # views, signals, tasks, shell
    await apush("dashboard.sales", {"total": 42})   # async code
    ephemeral("chat.lobby", {"type": "typing"})      # not numbered, not kept
    push_many([("user.7", {"n": 1}), PushMessage("user.8", {"n": 2}, key="order-9")])

Every message gets its topic's next sequence number (returned), is kept in the
topic's history for resume, and reaches every subscribed socket on every server
process as ``{"msg": ..., "code": ..., "data": ...}``. An ephemeral event
(typing indicators) reaches the sockets subscribed now and nothing else: no
``seq``, no history, so a resume never replays a stale one. The seed's helper
``SendMessage`` is ``ws.seed``'s, on top of ``push``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import Any

from ws import topics
from ws.protocol import encode_body, encode_data
from ws.publisher import publisher
from ws.publisher_sync import sync_publisher
from ws.store import Position, Resume

__all__ = [
    "PushMessage",
    "aephemeral",
    "apush",
    "apush_many",
    "catch_up",
    "ephemeral",
    "last_pushed_at",
    "push",
    "push_many",
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
    if _in_event_loop():
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


@dataclass(frozen=True)
class PushMessage:
    """One message of a ``push_many`` batch: ``push``'s arguments."""

    topic: str
    data: Any = None
    msg: str = "success"
    code: int = 200
    key: str | None = None


def push_many(messages: Iterable[PushMessage | tuple[str, Any]]) -> list[int]:
    """Push many messages at once; their ``seq``s, in the order given.

    Each is checked and encoded first (a bad one raises and nothing is pushed), then
    all are numbered, stored and published in one round trip per Redis shard, each
    topic's messages in the order given. ``key``s work as in ``push``; with keys, a
    batch retried after a connection error pushes nothing twice. For sync code;
    ``apush_many`` for async code.
    """
    if _in_event_loop():
        raise RuntimeError("push_many() called from async code: use 'await apush_many(...)'")
    prepared = _prepare_all(messages)
    return [position.seq for position in sync_publisher.publish_many(prepared)] if prepared else []


async def apush_many(messages: Iterable[PushMessage | tuple[str, Any]]) -> list[int]:
    """``push_many`` for async code."""
    prepared = _prepare_all(messages)
    if not prepared:
        return []
    positions = await publisher.arun(lambda: publisher.publish_many(prepared))
    return [position.seq for position in positions]


def _prepare_all(messages: Iterable[PushMessage | tuple[str, Any]]) -> list[_Push]:
    prepared = []
    for n, message in enumerate(messages):
        if isinstance(message, tuple) and len(message) == 2:
            message = PushMessage(*message)
        if not isinstance(message, PushMessage):
            raise TypeError(f"message {n}: a PushMessage or a (topic, data) pair, not {message!r}")
        prepared.append(
            _Push.prepare(message.topic, message.data, message.msg, message.code, message.key)
        )
    return prepared


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


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
