"""The seed route ``heartbeat/<room>/``, as the seed's clients know it: its consumer and routes.

Loaded only where ``ws.asgi`` mounts the seed routes (``seed_routes=True``).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from django.urls import re_path

from ws import topics
from ws.census import census
from ws.consumers.base import PushConsumer
from ws.layer_watch import catch_up_again_later, ensure_layer_watch
from ws.metrics import counters
from ws.outage import REDIS_UNAVAILABLE, redis_outage
from ws.protocol import CloseCode, ProtocolError
from ws.push import aephemeral, catch_up, topic_resume
from ws.seed import GREETING, parse_frame, render_error, render_message
from ws.store import Position

logger = logging.getLogger("ws")


class SeedRoomConsumer(PushConsumer):
    """The seed route ``heartbeat/<room>/``: group ``chat_<room>``, seed envelope.

    On connect the client alone is greeted with
    ``{"msg": "heartbeat", "code": 200, "data": []}`` (the seed sent it to the
    whole group: N clients, N² frames). A client frame ``{"message": "hi"}`` is
    relayed to the room as ``{"message": "hi"}``, as the seed did, where the room
    topic's publish rule allows it (``chat`` allows it for a Room with
    ``allow_client_messages``); otherwise it is refused ``4003``.
    """

    group: str | None = None
    counted = False  # in this process's census
    position = Position(0, "")

    async def connect(self) -> None:
        ensure_layer_watch()
        room = self.scope["url_route"]["kwargs"]["room_name"]
        try:
            self.topic = topics.seed_room_topic(room)
        except topics.UnknownTopic as error:
            await self.accept()
            await self.refuse_and_close(CloseCode.MALFORMED, f"invalid room name: {error}")
            return
        await self.accept()
        if not await self.authenticate():
            return
        if self.awaiting_token:  # the seed route has no auth frame: ?token= it is
            await self.refuse_auth("no Origin header: connect with ?token=")
            return
        if not await self.claim_seat():
            return
        if not await self.may_listen():
            await self.refuse_and_close(CloseCode.FORBIDDEN, "not allowed in this room")
            return
        self.group = topics.group_name(self.topic)
        await self.channel_layer.group_add(self.group, self.channel_name)
        census.opened()
        census.joined(self.topic)
        self.counted = True
        # Where the room stands as the client joins: later gaps are replayed from here.
        self.position = (await topic_resume(self.topic, None, None, snapshot=False)).position
        await self.send(text_data=GREETING)

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.without_redis_if_away(
                "leaving a room", self.channel_layer.group_discard(self.group, self.channel_name)
            )
        if self.counted:
            census.left(self.topic)
            census.closed()
        await super().disconnect(code)

    async def may_listen(self) -> bool:
        """Whether the socket's user may be in this room (the room topic's rule)."""
        rule = topics.resolve(self.topic).may_subscribe
        return bool(await database_sync_to_async(rule)(self.user))

    async def recheck(self, reason: str) -> None:
        if not await self.may_listen():
            await self.refuse_and_close(CloseCode.FORBIDDEN, f"access revoked: {reason}")

    async def handle_text(self, text: str) -> None:
        message = parse_frame(text)
        topic = topics.resolve(self.topic)
        if not await database_sync_to_async(topic.may_publish)(self.user):
            raise ProtocolError(CloseCode.FORBIDDEN, "this room does not accept client messages")
        data = {"message": message}
        handler = topic.publish_handler
        if handler is None:
            # As the seed relayed it: to everyone in the room, not numbered, not kept.
            await aephemeral(self.topic, data)
            return
        try:
            await database_sync_to_async(handler)(self.user, topic, data)
        except topics.PublishRefused as refused:
            raise ProtocolError(CloseCode(refused.code), refused.message) from None

    async def send_error(self, code: CloseCode, message: str, topic: str | None) -> None:
        await self.send(text_data=render_error(code, message))

    async def push_message(self, event: dict[str, Any]) -> None:
        held, seq = self.position, event["seq"]
        step = held.step_to(seq, event["epoch"])
        if step == "sent":
            return
        if step == "gap":  # messages were lost on the way: replay them
            await self.push_catchup(event)
            return
        self.position = Position(seq, held.epoch)
        await self.send(text_data=render_message(seq, event["body"]))

    async def push_catchup(self, event: dict[str, Any]) -> None:
        """Send what the client missed (the seed's clients cannot ask for it)."""
        try:
            resume = await catch_up(self.topic, self.position, snapshot=False)
        except REDIS_UNAVAILABLE as error:
            redis_outage.noticed(error, f"catching up on {self.topic}")
            catch_up_again_later()  # the layer watch sends another catch-up later
            return
        if resume.messages:
            counters.catchups += 1
        self.position = resume.position
        for seq, body in resume.messages:
            await self.send(text_data=render_message(seq, body))

    async def push_overflow(self, event: dict[str, Any]) -> None:
        """The queue overflowed and messages were dropped: replay them, recheck access."""
        await self.push_catchup(event)
        await self.recheck("queue overflowed")

    async def push_ephemeral(self, event: dict[str, Any]) -> None:
        """An ephemeral event (a relayed client message): its data as it is, like ``chat_data``."""
        await self.send(text_data=event["data"])

    async def chat_data(self, event: dict[str, Any]) -> None:
        """The seed's own event, for code that still sends to ``chat_<room>`` directly."""
        await self.send(text_data=json.dumps(event.get("data")))


seed_urlpatterns = [
    re_path(r"^ws/heartbeat/(?P<room_name>[^/]+)/$", SeedRoomConsumer.as_asgi()),
    re_path(r"^heartbeat/(?P<room_name>[^/]+)/$", SeedRoomConsumer.as_asgi()),
]
"""The seed's routes: ``ws/heartbeat/<room>/`` and ``heartbeat/<room>/``."""
