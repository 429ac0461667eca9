"""Thin consumers: authenticate, authorize, subscribe, relay what the layer delivers.

Nothing a client sends can raise out of a consumer: each bad frame gets an
error frame and the socket stays open, until a client has sent
``PUSH_MAX_BAD_FRAMES`` of them (then close ``4400``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from ws import topics
from ws._publisher import PUSH_EVENT_TYPE, Position
from ws.access import current_user
from ws.limits import CONNECTION_TTL_S, FrameRate, claim_connection, release_connection
from ws.protocol import (
    PONG,
    SEED_GREETING,
    ClientFrame,
    CloseCode,
    ProtocolError,
    frame_too_large,
    parse_client_frame,
    parse_seed_frame,
    render_authenticated,
    render_error,
    render_message,
    render_published,
    render_seed_error,
    render_seed_message,
    render_subscribed,
    render_unsubscribed,
)
from ws.push import apush, topic_position
from ws.tokens import BadToken, user_for_token

logger = logging.getLogger("ws")

try:  # what daphne (through autobahn) raises on a send to a socket that is closing
    from autobahn.exception import Disconnected as _Disconnected
except ImportError:  # pragma: no cover - another ASGI server
    _Disconnected = OSError
SOCKET_GONE = (_Disconnected, OSError)


def _client(scope: dict[str, Any], user: Any = None) -> str:
    user = user if user is not None else scope.get("user")
    who = f"user={user.pk}" if user is not None and user.is_authenticated else "user=anonymous"
    client = scope.get("client") or ("?", 0)
    origin = (scope.get("push_origin") or "none")[:100]
    return f"{who} origin={origin!r} client={client[0]}:{client[1]} path={scope.get('path')}"


def _query_token(scope: dict[str, Any]) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


class PushConsumer(AsyncWebsocketConsumer):
    """Base of our consumers: who is on the socket, frame limits, event dispatch."""

    bad_frames = 0
    # Set once the socket is closing (by us or the client): frames still queued
    # are not served and nothing more is sent.
    closing = False
    user: Any = None
    # The session this socket was signed in by (None when by token): its logout revokes.
    session_key: str | None = None
    # True while a socket with no Origin header has not yet shown a token.
    awaiting_token = False
    rate: FrameRate | None = None
    # The user this socket counts against (PUSH_MAX_CONNECTIONS_PER_USER), and the
    # task that keeps that claim alive in Redis.
    seat_user: Any = None
    seat_refresh: asyncio.Task[None] | None = None

    async def claim_seat(self) -> bool:
        """Count this socket against its user's limit; answer and close 4429 if over."""
        if not self.user.is_authenticated or self.seat_user == self.user.pk:
            return True
        await self.release_seat()
        if not await claim_connection(self.user.pk, self.channel_name):
            limit = settings.PUSH_MAX_CONNECTIONS_PER_USER
            logger.info(
                "ws refused a connection code=4429 reason=over %d sockets (%s)",
                limit,
                self.scope_client(),
            )
            await self.send_error(
                CloseCode.RATE_LIMITED, f"too many open sockets for this user (max {limit})", None
            )
            await self.close(code=CloseCode.RATE_LIMITED)
            return False
        self.seat_user = self.user.pk
        self.seat_refresh = asyncio.create_task(self.keep_seat(self.user.pk))
        await self.channel_layer.group_add(topics.access_group(self.user.pk), self.channel_name)
        return True

    async def keep_seat(self, user_id: Any) -> None:
        while True:
            await asyncio.sleep(CONNECTION_TTL_S / 3)
            await claim_connection(user_id, self.channel_name)

    async def release_seat(self) -> None:
        if self.seat_refresh is not None:
            self.seat_refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.seat_refresh
            self.seat_refresh = None
        if self.seat_user is not None:
            await self.channel_layer.group_discard(
                topics.access_group(self.seat_user), self.channel_name
            )
            await release_connection(self.seat_user, self.channel_name)
            self.seat_user = None

    async def disconnect(self, code: int) -> None:
        await self.release_seat()

    async def push_access(self, event: dict[str, Any]) -> None:
        """The user's access changed somewhere: reload them and re-check what we hold."""
        if event.get("user") != self.seat_user:
            return  # about a user this socket no longer speaks for
        ended_session = event.get("session")
        if ended_session is not None:
            if ended_session != self.session_key:
                return  # another session logged out; this socket does not depend on it
            user = AnonymousUser()
        else:
            user = await database_sync_to_async(current_user)(self.seat_user)
        reason = str(event.get("reason", "access changed"))
        logger.info("ws access changed reason=%s (%s)", reason, self.scope_client())
        self.user = user
        if not user.is_authenticated:
            await self.release_seat()
        await self.recheck(reason)

    async def recheck(self, reason: str) -> None:
        """Drop whatever ``self.user`` may no longer hold."""
        raise NotImplementedError

    async def authenticate(self) -> bool:
        """Settle the socket's user after ``accept()``; False if it was closed (4001).

        The session's user, unless a token comes in the query string. With no
        Origin header (not a browser) a token is required.
        """
        self.user = self.scope["user"]
        session = self.scope.get("session")
        self.session_key = session.session_key if session is not None else None
        token = _query_token(self.scope)
        if token is not None:
            return await self.use_token(token)
        if self.scope.get("push_origin") is None:
            self.awaiting_token = True
        return True

    async def use_token(self, token: str) -> bool:
        """Authenticate with a token; on refusal answer and close 4001. Never logs it."""
        try:
            user = await database_sync_to_async(user_for_token)(token)
        except BadToken as error:
            return await self.refuse_auth(f"token refused: {error.reason}")
        if self.user is not None and self.user.is_authenticated and self.user.pk != user.pk:
            return await self.refuse_auth("token is for another user than the session's")
        self.user, self.awaiting_token, self.session_key = user, False, None
        return True

    async def refuse_auth(self, reason: str) -> bool:
        logger.info(
            "ws refused authentication code=4001 reason=%s (%s)", reason, self.scope_client()
        )
        await self.send_error(CloseCode.NOT_AUTHENTICATED, reason, None)
        await self.close(code=CloseCode.NOT_AUTHENTICATED)
        return False

    def scope_client(self) -> str:
        return _client(self.scope, self.user)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Route an event; pushes skip Channels' per-message database hop.

        Since channels 4.2 every dispatch first closes old database connections
        in a thread; a push handler never touches the database, so it does not
        pay that hop. Events nobody handles are logged and dropped instead of
        killing the socket.
        """
        if message.get("type") == PUSH_EVENT_TYPE:
            await self.push_message(message)
            return
        kind = message.get("type")
        if (
            not isinstance(kind, str)
            or kind.startswith("_")
            or not hasattr(self, kind.replace(".", "_"))
        ):
            logger.warning("ws ignored an event of unknown type %r", kind)
            return
        await super().dispatch(message)

    async def push_message(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        if self.closing:
            return
        # daphne's autobahn accepts only a plain int (``type(code) == int``), not an IntEnum.
        if isinstance(code, int) and not isinstance(code, bool):
            code = int(code)
        self.closing = True
        with contextlib.suppress(*SOCKET_GONE):  # the client is closing it already
            await super().close(code=code, reason=reason)

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        """Send a frame, unless the socket is closing: a push racing a close is dropped."""
        if self.closing:
            return
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except SOCKET_GONE:
            # The close handshake has begun; daphne's disconnect event follows.
            self.closing = True

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return
        if self.rate is None:
            self.rate = FrameRate.from_settings()
        if not self.rate.allow():
            await self.refuse_flood()
            return
        try:
            if text_data is None:
                raise ProtocolError(CloseCode.MALFORMED, "binary frames are not supported")
            limit = settings.PUSH_MAX_FRAME_BYTES
            if frame_too_large(text_data, limit):
                raise ProtocolError(CloseCode.TOO_LARGE, f"frame is larger than {limit} bytes")
            await self.handle_text(text_data)
        except ProtocolError as error:
            await self.refuse(error)
        except Exception:
            # A bug of ours, not the client's: log it loudly, keep the socket.
            logger.exception("ws failed to handle a frame (%s)", self.scope_client())
            await self.send_error(CloseCode.INTERNAL_ERROR, "internal error", None)

    async def handle_text(self, text: str) -> None:
        raise NotImplementedError

    async def refuse_flood(self) -> None:
        """Answer a frame over the rate; close a socket that keeps flooding."""
        assert self.rate is not None
        if self.rate.refused == 1:
            logger.info("ws rate-limiting code=4429 (%s)", self.scope_client())
        if self.rate.refused >= settings.PUSH_RATE_MAX_REFUSED:
            logger.info("ws closing a flooding socket code=4429 (%s)", self.scope_client())
            await self.close(code=CloseCode.RATE_LIMITED)
            return
        await self.send_error(
            CloseCode.RATE_LIMITED,
            f"rate limited: over {settings.PUSH_RATE_PER_S:g} frames/s",
            None,
        )

    async def refuse(self, error: ProtocolError) -> None:
        """Answer a refused frame, and close a client that keeps sending bad ones."""
        logger.info(
            "ws refused a frame code=%d reason=%s topic=%s (%s)",
            error.code,
            error.message,
            error.topic,
            self.scope_client(),
        )
        await self.send_error(error.code, error.message, error.topic)
        if error.code in (CloseCode.MALFORMED, CloseCode.TOO_LARGE):
            self.bad_frames += 1
            if self.bad_frames >= settings.PUSH_MAX_BAD_FRAMES:
                logger.info(
                    "ws closing after %d bad frames (%s)", self.bad_frames, self.scope_client()
                )
                await self.close(code=CloseCode.MALFORMED)

    async def send_error(self, code: CloseCode, message: str, topic: str | None) -> None:
        raise NotImplementedError


class SeedRoomConsumer(PushConsumer):
    """The seed route ``heartbeat/<room>/``: group ``chat_<room>``, seed envelope.

    On connect the client alone is greeted with
    ``{"msg": "heartbeat", "code": 200, "data": []}`` (the seed sent it to the
    whole group: N clients, N² frames).
    """

    group: str | None = None

    async def connect(self) -> None:
        room = self.scope["url_route"]["kwargs"]["room_name"]
        try:
            self.topic = topics.seed_room_topic(room)
        except topics.UnknownTopic as error:
            await self.accept()
            await self.send_error(CloseCode.MALFORMED, f"invalid room name: {error}", None)
            await self.close(code=CloseCode.MALFORMED)
            return
        await self.accept()
        if not await self.authenticate():
            return
        if self.awaiting_token:  # the seed route has no auth frame: ?token= it is
            await self.refuse_auth("no Origin header: connect with ?token=")
            return
        if not await self.claim_seat():
            return
        allowed = await database_sync_to_async(topics.resolve(self.topic).may_subscribe)(self.user)
        if not allowed:
            await self.send_error(CloseCode.FORBIDDEN, "not allowed in this room", None)
            await self.close(code=CloseCode.FORBIDDEN)
            return
        self.group = topics.group_name(self.topic)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send(text_data=SEED_GREETING)

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        await super().disconnect(code)

    async def recheck(self, reason: str) -> None:
        allowed = await database_sync_to_async(topics.resolve(self.topic).may_subscribe)(self.user)
        if not allowed:
            await self.send_error(CloseCode.FORBIDDEN, f"access revoked: {reason}", None)
            await self.close(code=CloseCode.FORBIDDEN)

    async def handle_text(self, text: str) -> None:
        parse_seed_frame(text)
        raise ProtocolError(CloseCode.FORBIDDEN, "this room does not accept client messages")

    async def send_error(self, code: CloseCode, message: str, topic: str | None) -> None:
        await self.send(text_data=render_seed_error(code, message))

    async def push_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=render_seed_message(event["seq"], event["body"]))

    async def chat_data(self, event: dict[str, Any]) -> None:
        """The seed's own event, for code that still sends to ``chat_<room>`` directly."""
        await self.send(text_data=json.dumps(event.get("data")))


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
            await self.subscribe(topic)
        elif frame["op"] == "unsubscribe":
            await self.unsubscribe(topic)
        elif frame["op"] == "publish":
            await self.publish(topic, frame["data"])

    def _resolve(self, name: str) -> topics.Topic:
        try:
            return topics.resolve(name)
        except topics.UnknownTopic as error:
            raise ProtocolError(CloseCode.MALFORMED, str(error), name[:100]) from None

    async def subscribe(self, topic: topics.Topic) -> None:
        if not await database_sync_to_async(topic.may_subscribe)(self.user):
            raise ProtocolError(CloseCode.FORBIDDEN, "not allowed to subscribe", topic.name)
        position = self.subscriptions.get(topic.name)
        if position is None and len(self.subscriptions) >= settings.PUSH_MAX_SUBSCRIPTIONS:
            raise ProtocolError(
                CloseCode.RATE_LIMITED,
                f"too many subscriptions (max {settings.PUSH_MAX_SUBSCRIPTIONS})",
                topic.name,
            )
        if position is None:
            await self.channel_layer.group_add(topics.group_name(topic.name), self.channel_name)
            # Read after joining the group: a push that lands in between is at or
            # below this seq, is history to the client, and is not relayed twice.
            position = await topic_position(topic.name)
            self.subscriptions[topic.name] = position
        await self.send(
            text_data=render_subscribed(topic.name, position.seq, position.epoch, recovered=False)
        )

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


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Any other path: refused at the handshake (HTTP 403), with one log line."""

    async def connect(self) -> None:
        logger.info("ws refused an unknown path (%s)", _client(self.scope))
        await self.close()
