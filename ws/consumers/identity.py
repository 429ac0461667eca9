"""Who is on a socket: session or token, the per-user socket limit, access changes.

Mixed into ``PushConsumer``; it relies on the consumer's ``refuse_and_close``,
``recheck`` and ``scope_client``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.contrib.auth.models import AnonymousUser

from ws import topics
from ws.access import current_user
from ws.conf import push_settings
from ws.limits import CONNECTION_TTL_S, claim_connection, release_connection
from ws.protocol import CloseCode
from ws.tokens import BadToken, user_for_token

logger = logging.getLogger("ws")


def query_token(scope: dict[str, Any]) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return values[0] if values else None


class IdentityMixin:
    """Settles and keeps current who a socket speaks for."""

    channel_layer: Any
    channel_name: str
    scope: dict[str, Any]
    user: Any = None
    # The session this socket was signed in by (None when by token): its logout revokes.
    session_key: str | None = None
    # True while a socket with no Origin header has not yet shown a token.
    awaiting_token = False
    # The user this socket counts against (PUSH_MAX_CONNECTIONS_PER_USER), and the
    # task that keeps that claim alive in Redis.
    seat_user: Any = None
    seat_refresh: asyncio.Task[None] | None = None
    # PushConsumer's: declared here, not defined, so it is not shadowed.
    without_redis_if_away: Callable[[str, Awaitable[Any]], Awaitable[None]]

    async def claim_seat(self) -> bool:
        """Count this socket against its user's limit; answer and close 4429 if over."""
        if not self.user.is_authenticated or self.seat_user == self.user.pk:
            return True
        await self.release_seat()
        if not await claim_connection(self.user.pk, self.channel_name):
            limit = push_settings.PUSH_MAX_CONNECTIONS_PER_USER
            logger.info(
                "ws refused a connection code=4429 reason=over %d sockets (%s)",
                limit,
                self.scope_client(),
            )
            await self.refuse_and_close(
                CloseCode.RATE_LIMITED, f"too many open sockets for this user (max {limit})"
            )
            return False
        self.seat_user = self.user.pk
        self.seat_refresh = asyncio.create_task(self.keep_seat(self.user.pk))
        await self.channel_layer.group_add(topics.access_group(self.user.pk), self.channel_name)
        return True

    async def keep_seat(self, user_id: Any) -> None:
        while True:
            await asyncio.sleep(CONNECTION_TTL_S / 3)
            # If Redis is away, the claim outlives two missed refreshes.
            await self.without_redis_if_away(
                "refreshing a socket's claim", claim_connection(user_id, self.channel_name)
            )

    async def release_seat(self) -> None:
        if self.seat_refresh is not None:
            self.seat_refresh.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.seat_refresh
            self.seat_refresh = None
        if self.seat_user is not None:
            user_id, self.seat_user = self.seat_user, None
            # Each expires by itself if Redis is away (the claim within CONNECTION_TTL_S).
            await self.without_redis_if_away(
                "leaving the access group",
                self.channel_layer.group_discard(topics.access_group(user_id), self.channel_name),
            )
            await self.without_redis_if_away(
                "releasing a socket's claim", release_connection(user_id, self.channel_name)
            )

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
        token = query_token(self.scope)
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
        await self.refuse_and_close(CloseCode.NOT_AUTHENTICATED, reason)
        return False
