"""Presence on the multiplexed endpoint: join, leave, and the frames a socket sees.

Mixed into ``MultiplexConsumer``; the Redis side is ``ws/presence.py``.

A socket subscribed to a presence topic gets ``presence`` (every member, itself
included) after its ``subscribed`` frame, then ``join`` and ``leave`` frames.
The join and leave events are published to the whole group, and the socket's
own join may arrive after the list that already holds it: each subscription
remembers which members its socket was told about, and only a join of one it
was not told about, or a leave of one it was, is forwarded. So the socket's
picture converges on the truth, whatever order events land in.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from ws import presence, topics
from ws.protocol import render_join, render_leave, render_presence


class PresenceMixin:
    """Joins and leaves a socket's presence topics and forwards their changes."""

    channel_name: str
    user: Any
    # PushConsumer's ``send`` and ``without_redis_if_away``: declared here, not defined,
    # so they are not shadowed.
    send: Callable[..., Awaitable[None]]
    without_redis_if_away: Callable[[str, Awaitable[Any]], Awaitable[None]]
    # topic -> ids of the members this socket was told are there (presence topics only).
    presence_told: dict[str, set[str]] | None = None

    def _told(self) -> dict[str, set[str]]:
        if self.presence_told is None:
            self.presence_told = {}
        return self.presence_told

    async def join_presence(self, topic: topics.Topic) -> None:
        """After a subscribe: join the topic's presence and send the socket the members."""
        if not topic.presence:
            return
        # Marked before the script, so a leave follows even if the script fails.
        told = self._told().setdefault(topic.name, set())
        members = await presence.join(
            topic.name, self.channel_name, presence.member_for(self.user, self.channel_name)
        )
        told.clear()
        told.update(member["id"] for member in members)
        await self.send(text_data=render_presence(topic.name, members))

    async def leave_presence(self, name: str) -> None:
        """After an unsubscribe (or a revoked subscription): leave the topic's presence."""
        if self._told().pop(name, None) is None:
            return
        # If Redis is away: no longer refreshed, the entry expires and a sweep announces it.
        await self.without_redis_if_away(
            f"leaving presence of {name}", presence.leave(name, self.channel_name)
        )

    async def presence_join(self, event: dict[str, Any]) -> None:
        """Someone joined a topic: tell the socket, unless it knows already."""
        await self._forward("join", event)

    async def presence_leave(self, event: dict[str, Any]) -> None:
        """Someone left a topic: tell the socket, if it was told they were there."""
        await self._forward("leave", event)

    async def _forward(self, op: str, event: dict[str, Any]) -> None:
        told = self._told().get(str(event.get("topic")))
        if told is None:
            return  # not (or no longer) subscribed here
        member = json.loads(event["member"])
        if (member["id"] in told) == (op == "join"):
            return  # a join of someone listed, or a leave of someone never listed
        if op == "join":
            told.add(member["id"])
            await self.send(text_data=render_join(event["topic"], member))
        else:
            told.discard(member["id"])
            await self.send(text_data=render_leave(event["topic"], member))
