"""The session on a WebSocket's scope, without wrapping every frame it sends.

Channels' ``SessionMiddleware`` wraps ``send`` so that an HTTP response can save
a changed session and carry its cookie. A WebSocket frame can do neither, yet
the wrapper still reads the session on every frame: under fan-out that was
about a tenth of the server's CPU. This middleware fills ``scope["session"]``
the same way (Channels' own ``InstanceSessionWrapper``, lazily loaded) and
hands the inner application the server's ``send`` unchanged. As with Channels,
a consumer that changes the session saves it itself (``await session.asave()``).
"""

from __future__ import annotations

from typing import Any

from channels.sessions import CookieMiddleware, InstanceSessionWrapper


class WebSocketSessionMiddleware:
    """``scope["session"]`` for WebSocket scopes; needs ``CookieMiddleware`` above it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        wrapper = InstanceSessionWrapper(scope, send)
        await wrapper.resolve_session()
        return await self.inner(wrapper.scope, receive, send)


def websocket_session_stack(inner: Any) -> Any:
    """Cookies, then the session, then ``inner``: ``SessionMiddlewareStack`` for sockets."""
    return CookieMiddleware(WebSocketSessionMiddleware(inner))
