"""Rooms and what a topic's history holds, for the chat tests."""

from __future__ import annotations

import json
from typing import Any

from ws import topics
from ws.publisher import publisher


def make_room(slug: str, *members: Any, **fields: Any) -> Any:
    """A committed room with ``members`` (ORM: call from sync code or ``in_thread``)."""
    from chat.models import Room

    room = Room.objects.create(slug=slug, title=slug.title(), **fields)
    room.members.add(*members)
    return room


def pushed(topic: str) -> list[tuple[int, Any]]:
    """Every message kept in ``topic``'s history, as a client resuming from 0 gets them."""
    group, retention = topics.group_name(topic), topics.resolve(topic).retention

    def resume(since: int | None, epoch: str | None) -> Any:
        return publisher.run(lambda: publisher.resume(topic, group, since, epoch, False, retention))

    epoch = resume(None, None).position.epoch
    replay = resume(0, epoch)
    assert replay.recovered
    return [(seq, json.loads("{" + body + "}")["data"]) for seq, body in replay.messages]
