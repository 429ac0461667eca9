"""The multiplexed endpoint ``ws/``: one socket, many topics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from ws import topics
from ws._publisher import Position
from ws.consumers.base import PushConsumer
from ws.protocol import (
    PONG,
    ClientFrame,
    CloseCode,
    ProtocolError,
    parse_client_frame,
    render_authenticated,
    render_error,
    render_message,
    render_published,
    render_subscribed,
    render_unsubscribed,
)
from ws.push import apush, topic_resume

logger = logging.getLogger("ws")


class MultiplexConsumer(PushConsumer):
    """The multiplexed endpoint ``ws/``: one socket, many topics."""

    async def connect(self) -> None:
        # topic -> where this socket stands in it: the last seq it was given (at
        # subscribe, or since), in which epoch. Older pushes are history to it.
        self.subscriptions: dict[str, Position] = {}
        self.auth_deadline: asyncio.Task[None] | None = None
        await self.accept()
        if not await self.authenticate():
            return
        if self.awaiting_token:
            self.auth_deadline = asyncio.create_task(self.close_if_no_token())
        await self.claim_seat()

    async def close_if_no_token(self) -> None:
        await asyncio.sleep(settings.PUSH_AUTH_TIMEOUT_S)
        if self.awaiting_token:
            await self.refuse_auth("no token within the time allowed")

    async def disconnect(self, code: int) -> None:
        if self.auth_deadline is not None:
            self.auth_deadline.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.auth_deadline
        for topic in list(self.subscriptions):
            await self.channel_layer.group_discard(topics.group_name(topic), self.channel_name)
        self.subscriptions.clear()
        await super().disconnect(code)

    async def handle_text(self, text: str) -> None:
        frame: ClientFrame = parse_client_frame(text)
        if frame["op"] == "ping":
            await self.send(text_data=PONG)
            return
        if frame["op"] == "auth":
            if await self.use_token(frame["token"]) and await self.claim_seat():
                await self.send(text_data=render_authenticated(self.user.pk))
            return
        if self.awaiting_token:
            await self.refuse_auth('no Origin header: send {"op": "auth", "token": ...} first')
            return
        topic = self._resolve(frame["topic"])
        if frame["op"] == "subscribe":
            await self.subscribe(topic, frame.get("since"), frame.get("epoch"))
        elif frame["op"] == "unsubscribe":
            await self.unsubscribe(topic)
        elif frame["op"] == "publish":
            await self.publish(topic, frame["data"])

    def _resolve(self, name: str) -> topics.Topic:
        try:
            return topics.resolve(name)
        except topics.UnknownTopic as error:
            raise ProtocolError(CloseCode.MALFORMED, str(error), name[:100]) from None

    async def subscribe(
        self, topic: topics.Topic, since: int | None = None, epoch: str | None = None
    ) -> None:
        """Join the topic; replay what the client missed since ``since``, or reset it.

        Recovery is all or nothing: either every message after ``since`` (same
        epoch, still kept, within ``PUSH_REPLAY_LIMIT``) in order, or
        ``recovered: false`` and, for state-like topics, the latest message as a
        snapshot marked ``reset``.
        """
        if not await database_sync_to_async(topic.may_subscribe)(self.user):
            raise ProtocolError(CloseCode.FORBIDDEN, "not allowed to subscribe", topic.name)
        held = self.subscriptions.get(topic.name)
        if held is None and len(self.subscriptions) >= settings.PUSH_MAX_SUBSCRIPTIONS:
            raise ProtocolError(
                CloseCode.RATE_LIMITED,
                f"too many subscriptions (max {settings.PUSH_MAX_SUBSCRIPTIONS})",
                topic.name,
            )
        if held is not None and since is None:
            # Already here and nothing to recover: say where the socket stands.
            await self.send(
                text_data=render_subscribed(topic.name, held.seq, held.epoch, recovered=True)
            )
            return
        if held is None:
            await self.channel_layer.group_add(topics.group_name(topic.name), self.channel_name)
        # Read after joining the group: a push that lands in between is at or below
        # this position, is sent below if owed, and is not relayed twice.
        resume = await topic_resume(topic.name, since, epoch, snapshot=topic.pattern.state_like)
        self.subscriptions[topic.name] = resume.position
        position = resume.position
        await self.send(
            text_data=render_subscribed(
                topic.name, position.seq, position.epoch, recovered=resume.recovered
            )
        )
        for seq, body in resume.messages:
            await self.send(text_data=render_message(topic.name, seq, body))
        if resume.snapshot is not None:
            seq, body = resume.snapshot
            await self.send(text_data=render_message(topic.name, seq, body, reset=True))

    async def recheck(self, reason: str) -> None:
        def still_allowed(user: Any, names: list[str]) -> set[str]:
            return {name for name in names if topics.resolve(name).may_subscribe(user)}

        held = list(self.subscriptions)
        allowed = await database_sync_to_async(still_allowed)(self.user, held)
        for name in held:
            if name not in allowed:
                self.subscriptions.pop(name, None)
                await self.channel_layer.group_discard(topics.group_name(name), self.channel_name)
                await self.send_error(CloseCode.FORBIDDEN, f"subscription revoked: {reason}", name)

    async def unsubscribe(self, topic: topics.Topic) -> None:
        if self.subscriptions.pop(topic.name, None) is not None:
            await self.channel_layer.group_discard(topics.group_name(topic.name), self.channel_name)
        await self.send(text_data=render_unsubscribed(topic.name))

    async def publish(self, topic: topics.Topic, data: Any) -> None:
        if not await database_sync_to_async(topic.may_publish)(self.user):
            raise ProtocolError(CloseCode.FORBIDDEN, "not allowed to publish", topic.name)
        seq = await apush(topic.name, data)
        await self.send(text_data=render_published(topic.name, seq))

    async def send_error(self, code: CloseCode, message: str, topic: str | None) -> None:
        await self.send(text_data=render_error(code, message, topic))

    async def push_message(self, event: dict[str, Any]) -> None:
        topic, seq = event["topic"], event["seq"]
        position = self.subscriptions.get(topic)
        if position is None:
            return
        if event["epoch"] != position.epoch:
            # The topic's history was lost (Redis flushed or restarted empty) and its
            # seq started again: the client's numbers mean nothing now. Resync.
            logger.info("ws topic %s changed epoch; closing 4000 (%s)", topic, self.scope_client())
            await self.close(code=CloseCode.RESYNC)
            return
        if seq <= position.seq:
            return
        self.subscriptions[topic] = Position(seq, position.epoch)
        await self.send(text_data=render_message(topic, seq, event["body"]))
