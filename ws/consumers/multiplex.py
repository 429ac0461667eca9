"""The multiplexed endpoint ``ws/``: one socket, many topics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from channels.db import database_sync_to_async

from ws import topics
from ws.census import census
from ws.conf import push_settings
from ws.consumers.base import PushConsumer
from ws.consumers.presence import PresenceMixin
from ws.layer_watch import catch_up_again_later, ensure_layer_watch
from ws.metrics import counters
from ws.outage import REDIS_UNAVAILABLE, TRY_AGAIN_MESSAGE, redis_outage
from ws.protocol import (
    PONG,
    ClientFrame,
    CloseCode,
    ProtocolError,
    parse_client_frame,
    render_authenticated,
    render_ephemeral,
    render_error,
    render_message,
    render_published,
    render_subscribed,
    render_unsubscribed,
)
from ws.push import apush, catch_up, topic_resume
from ws.signals import topic_subscribed
from ws.store import Position, Resume

logger = logging.getLogger("ws")


class MultiplexConsumer(PresenceMixin, PushConsumer):
    """The multiplexed endpoint ``ws/``: one socket, many topics."""

    counted = False  # in this process's census of open sockets

    async def connect(self) -> None:
        # topic -> where this socket stands in it: the last seq it was given (at
        # subscribe, or since), in which epoch. Older pushes are history to it.
        self.subscriptions: dict[str, Position] = {}
        self.auth_deadline: asyncio.Task[None] | None = None
        ensure_layer_watch()
        await self.accept()
        census.opened()
        self.counted = True
        if not await self.authenticate():
            return
        if self.awaiting_token:
            self.auth_deadline = asyncio.create_task(self.close_if_no_token())
        await self.claim_seat()

    async def close_if_no_token(self) -> None:
        await asyncio.sleep(push_settings.PUSH_AUTH_TIMEOUT_S)
        if self.awaiting_token:
            await self.refuse_auth("no token within the time allowed")

    async def disconnect(self, code: int) -> None:
        if self.auth_deadline is not None:
            self.auth_deadline.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.auth_deadline
        for topic in list(self.subscriptions):
            await self.leave_topic(topic)
        if self.counted:
            census.closed()
        await super().disconnect(code)

    async def leave_topic(self, name: str) -> None:
        """Stop relaying ``name`` to this socket: its group, its presence, the census."""
        if self.subscriptions.pop(name, None) is None:
            return
        census.left(name)
        await self.leave_presence(name)
        await self.without_redis_if_away(
            "leaving a topic",
            self.channel_layer.group_discard(topics.group_name(name), self.channel_name),
        )

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
        try:
            if frame["op"] == "subscribe":
                await self.subscribe(topic, frame.get("since"), frame.get("epoch"))
            elif frame["op"] == "unsubscribe":
                await self.unsubscribe(topic)
            elif frame["op"] == "publish":
                await self.publish(topic, frame["data"])
        except REDIS_UNAVAILABLE as error:
            # Nothing was done: the client sends the frame again later (push.js does).
            redis_outage.noticed(error, f"{frame['op']} {topic.name}")
            await self.send(
                text_data=render_error(
                    CloseCode.TRY_AGAIN, TRY_AGAIN_MESSAGE, topic.name, request=frame["op"]
                )
            )

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
        if held is None and len(self.subscriptions) >= push_settings.PUSH_MAX_SUBSCRIPTIONS:
            raise ProtocolError(
                CloseCode.RATE_LIMITED,
                f"too many subscriptions (max {push_settings.PUSH_MAX_SUBSCRIPTIONS})",
                topic.name,
            )
        if held is not None and since is None:
            # Already here and nothing to recover: say where the socket stands.
            await self.send(
                text_data=render_subscribed(topic.name, held.seq, held.epoch, recovered=True)
            )
            await self.join_presence(topic)
            return
        group = topics.group_name(topic.name)
        if held is None:
            await self.channel_layer.group_add(group, self.channel_name)
        # Read after joining the group: a push that lands in between is at or below
        # this position, is sent below if owed, and is not relayed twice.
        try:
            resume = await topic_resume(topic.name, since, epoch, snapshot=topic.pattern.state_like)
        except BaseException:
            if held is None:
                await self.channel_layer.group_discard(group, self.channel_name)
            raise
        if held is None:
            census.joined(topic.name)
        await self.send_resume(topic.name, resume)
        if held is None:
            await self.announce_subscribed(topic.name)
        await self.join_presence(topic)

    async def announce_subscribed(self, topic: str) -> None:
        """Tell other apps (``ws.signals.topic_subscribed``); their errors are only logged."""
        answers = await topic_subscribed.asend_robust(sender=type(self), topic=topic)
        for receiver, answer in answers:
            if isinstance(answer, Exception):
                logger.warning("ws topic_subscribed receiver %r failed: %r", receiver, answer)

    async def send_resume(self, topic: str, resume: Resume) -> None:
        """Tell the socket where it stands in ``topic``, then replay or reset it."""
        position = resume.position
        self.subscriptions[topic] = position
        await self.send(
            text_data=render_subscribed(
                topic,
                position.seq,
                position.epoch,
                recovered=resume.recovered,
                continues=resume.continues,
            )
        )
        for seq, body in resume.messages:
            await self.send(text_data=render_message(topic, seq, body))
        if resume.snapshot is not None:
            seq, body = resume.snapshot
            await self.send(text_data=render_message(topic, seq, body, reset=True))

    async def recheck(self, reason: str) -> None:
        def still_allowed(user: Any, names: list[str]) -> set[str]:
            return {name for name in names if topics.resolve(name).may_subscribe(user)}

        held = list(self.subscriptions)
        allowed = await database_sync_to_async(still_allowed)(self.user, held)
        for name in held:
            if name not in allowed:
                await self.leave_topic(name)
                await self.send_error(CloseCode.FORBIDDEN, f"subscription revoked: {reason}", name)

    async def unsubscribe(self, topic: topics.Topic) -> None:
        await self.leave_topic(topic.name)
        await self.send(text_data=render_unsubscribed(topic.name))

    async def publish(self, topic: topics.Topic, data: Any) -> None:
        """Push ``data`` where the topic's rule allows, or hand it to the topic's handler.

        A handler (``topics.configure(..., on_publish=...)``) does the work in a
        thread; its ``PublishRefused`` becomes an error frame and the socket
        stays (not counted as a bad frame: the frame was well formed).
        """
        if not await database_sync_to_async(topic.may_publish)(self.user):
            raise ProtocolError(CloseCode.FORBIDDEN, "not allowed to publish", topic.name)
        handler = topic.publish_handler
        if handler is None:
            seq: int | None = await apush(topic.name, data)
        else:
            try:
                seq = await database_sync_to_async(handler)(self.user, topic, data)
            except topics.PublishRefused as refused:
                logger.info(
                    "ws publish refused code=%d reason=%s topic=%s (%s)",
                    refused.code,
                    refused.message,
                    topic.name,
                    self.scope_client(),
                )
                await self.send_error(CloseCode(refused.code), refused.message, topic.name)
                return
        await self.send(text_data=render_published(topic.name, seq))

    async def send_error(self, code: CloseCode, message: str, topic: str | None) -> None:
        await self.send(text_data=render_error(code, message, topic))

    async def push_message(self, event: dict[str, Any]) -> None:
        topic, seq = event["topic"], event["seq"]
        held = self.subscriptions.get(topic)
        if held is None:
            return
        step = held.step_to(seq, event["epoch"])
        if step == "sent":
            return
        if step == "gap":  # send the socket what it missed, from the history
            await self.catch_up(topic)
            return
        self.subscriptions[topic] = Position(seq, held.epoch)
        await self.send(text_data=render_message(topic, seq, event["body"]))

    async def push_ephemeral(self, event: dict[str, Any]) -> None:
        """An ephemeral event (``ws.push.ephemeral``): relayed if subscribed, never numbered."""
        topic = event["topic"]
        if topic in self.subscriptions:
            await self.send(text_data=render_ephemeral(topic, event["data"]))

    async def catch_up(self, topic: str) -> None:
        """Send what the socket missed in ``topic``: a replay, or a reset, after a
        ``subscribed`` frame saying where it stands now. Nothing when it missed nothing."""
        held = self.subscriptions.get(topic)
        if held is None:
            return
        try:
            resume = await catch_up(topic, held, snapshot=topics.resolve(topic).pattern.state_like)
        except REDIS_UNAVAILABLE as error:
            # Redis went away again: the layer watch sends another catch-up later.
            redis_outage.noticed(error, f"catching up on {topic}")
            catch_up_again_later()
            return
        if resume.recovered and resume.position == held:
            return
        counters.catchups += 1
        logger.info(
            "ws catching up on %s from %d/%s to %d/%s recovered=%s (%s)",
            topic,
            held.seq,
            held.epoch,
            resume.position.seq,
            resume.position.epoch,
            resume.recovered,
            self.scope_client(),
        )
        await self.send_resume(topic, resume)

    async def push_catchup(self, event: dict[str, Any]) -> None:
        """The layer watch says Redis lost messages owed to this process: catch up."""
        for topic in list(self.subscriptions):
            await self.catch_up(topic)
            try:  # joins and leaves may have been lost too: the list, afresh
                await self.join_presence(topics.resolve(topic))
            except REDIS_UNAVAILABLE as error:
                redis_outage.noticed(error, f"refreshing presence of {topic}")

    async def push_overflow(self, event: dict[str, Any]) -> None:
        """This socket's queue overflowed and messages were dropped: catch up on all."""
        logger.warning("ws socket fell behind; catching up (%s)", self.scope_client())
        await self.push_catchup(event)
        await self.recheck("queue overflowed")  # an access change may have been dropped
