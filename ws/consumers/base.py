"""The base of our consumers: frame handling, limits on input, event dispatch.

Nothing a client sends can raise out of a consumer: each bad frame gets an
error frame and the socket stays open, until a client has sent
``PUSH_MAX_BAD_FRAMES`` of them (then close ``4400``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Awaitable
from typing import Any

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer

from ws.conf import push_settings
from ws.consumers.dispatch import dispatch_in_turn
from ws.consumers.identity import IdentityMixin
from ws.drain import REASON as DRAIN_REASON
from ws.drain import drain
from ws.limits import FrameRate
from ws.outage import REDIS_UNAVAILABLE, TRY_AGAIN_MESSAGE, redis_outage
from ws.protocol import CloseCode, ProtocolError, frame_too_large
from ws.store import PUSH_EVENT_TYPE

logger = logging.getLogger("ws")

try:  # what daphne (through autobahn) raises on a send to a socket that is closing
    from autobahn.exception import Disconnected as _Disconnected
except ImportError:  # pragma: no cover - another ASGI server
    _Disconnected = OSError
SOCKET_GONE = (_Disconnected, OSError)


def describe_client(scope: dict[str, Any], user: Any = None) -> str:
    """``user=… origin=… client=… path=…`` for one-line log entries."""
    user = user if user is not None else scope.get("user")
    who = f"user={user.pk}" if user is not None and user.is_authenticated else "user=anonymous"
    client = scope.get("client") or ("?", 0)
    origin = (scope.get("push_origin") or "none")[:100]
    return f"{who} origin={origin!r} client={client[0]}:{client[1]} path={scope.get('path')}"


class PushConsumer(IdentityMixin, AsyncWebsocketConsumer):
    """Base of our consumers: who is on the socket, frame limits, event dispatch."""

    bad_frames = 0
    # Set once the socket is closing (by us or the client): frames still queued
    # are not served and nothing more is sent.
    closing = False
    rate: FrameRate | None = None

    def scope_client(self) -> str:
        return describe_client(self.scope, self.user)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Channels' ``AsyncConsumer.__call__`` with a lighter event loop (``dispatch_in_turn``).

        The drain counts the socket from here to its end (a process that is going
        exits once its sockets are gone).
        """
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        drain.register(self)
        try:
            await self._serve(receive)
        finally:
            drain.unregister(self)

    async def _serve(self, receive: Any) -> None:
        try:
            self.channel_name = await self.channel_layer.new_channel()
        except REDIS_UNAVAILABLE as error:  # the layer subscribes each socket's channel
            redis_outage.noticed(error, "opening a socket")
            await self.turn_away(receive)
            return
        self.channel_receive = functools.partial(self.channel_layer.receive, self.channel_name)
        with contextlib.suppress(StopConsumer):
            await dispatch_in_turn([receive, self.channel_receive], self.dispatch)

    async def turn_away(self, receive: Any) -> None:
        """Redis is away as the socket opens: accept it and close ``4503`` (try again)."""
        if (await receive()).get("type") != "websocket.connect":
            return
        await self.accept()
        await self.refuse_and_close(CloseCode.TRY_AGAIN, TRY_AGAIN_MESSAGE)

    async def websocket_connect(self, message: dict[str, Any]) -> None:
        """``connect()``; a request to Redis failing in it closes ``4503``, not ``1011``.

        A socket accepted while this process drains (it is going) is closed at once,
        to reconnect to another process.
        """
        try:
            await super().websocket_connect(message)
        except REDIS_UNAVAILABLE as error:
            redis_outage.noticed(error, "a connect")
            await self.refuse_and_close(CloseCode.TRY_AGAIN, TRY_AGAIN_MESSAGE)
        if not self.closing and not drain.admit(self):
            await self.close(code=drain.close_code, reason=DRAIN_REASON)

    async def without_redis_if_away(self, what: str, step: Awaitable[Any]) -> None:
        """Await a clean-up ``step``; if Redis is away, count it in the outage and go on.

        For clean-up only (what a closing socket undoes): each such entry in Redis
        expires by itself, so a socket closing during an outage still frees the rest.
        """
        try:
            await step
        except REDIS_UNAVAILABLE as error:
            redis_outage.noticed(error, what)

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
            limit = push_settings.PUSH_MAX_FRAME_BYTES
            if frame_too_large(text_data, limit):
                raise ProtocolError(CloseCode.TOO_LARGE, f"frame is larger than {limit} bytes")
            await self.handle_text(text_data)
        except ProtocolError as error:
            await self.refuse(error)
        except REDIS_UNAVAILABLE as error:
            # Nothing was done; the client may send the frame again (push.js does).
            redis_outage.noticed(error, "a frame")
            await self.send_error(CloseCode.TRY_AGAIN, TRY_AGAIN_MESSAGE, None)
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
        if self.rate.refused >= push_settings.PUSH_RATE_MAX_REFUSED:
            logger.info("ws closing a flooding socket code=4429 (%s)", self.scope_client())
            await self.close(code=CloseCode.RATE_LIMITED)
            return
        await self.send_error(
            CloseCode.RATE_LIMITED,
            f"rate limited: over {push_settings.PUSH_RATE_PER_S:g} frames/s",
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
            if self.bad_frames >= push_settings.PUSH_MAX_BAD_FRAMES:
                logger.info(
                    "ws closing after %d bad frames (%s)", self.bad_frames, self.scope_client()
                )
                await self.close(code=CloseCode.MALFORMED)

    async def send_error(self, code: CloseCode, message: str, topic: str | None) -> None:
        raise NotImplementedError

    async def refuse_and_close(self, code: CloseCode, message: str) -> None:
        """Say why in an error frame, then close with the same code."""
        await self.send_error(code, message, None)
        await self.close(code=code)


class NotFoundConsumer(AsyncWebsocketConsumer):
    """Any other path: refused at the handshake (HTTP 403), with one log line."""

    async def connect(self) -> None:
        logger.info("ws refused an unknown path (%s)", describe_client(self.scope))
        await self.close()
