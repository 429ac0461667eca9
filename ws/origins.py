"""The WebSocket Origin check: scheme, host and port, not the host alone.

Channels' ``AllowedHostsOriginValidator`` compares host names only, so a page
served from another port or scheme of the same host (another app, a dev
server) could open sockets with the user's cookies. Here an Origin passes when
it is the socket's own origin (its ``Host`` header, with the scheme from
``X-Forwarded-Proto`` behind a proxy, else ``http``) or is listed in
``PUSH_ALLOWED_ORIGINS``; the ``Host`` must be in ``ALLOWED_HOSTS`` (with
``DEBUG`` and no ``ALLOWED_HOSTS``, the local names Django's own check allows).

A request without an Origin header (not a browser) passes with
``scope["push_origin"] = None``: consumers then require a token.
Refusals happen before ``accept()``, so the client sees HTTP 403.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

from ws.conf import push_settings

logger = logging.getLogger("ws")

DEFAULT_PORTS = {"http": 80, "https": 443}
# What Django's ``HttpRequest.get_host`` allows with DEBUG on and ALLOWED_HOSTS empty
# (a fresh ``startproject``): sockets pass where the project's pages are served.
DEBUG_ALLOWED_HOSTS = [".localhost", "127.0.0.1", "[::1]"]

Origin = tuple[str, str, int]


def parse_origin(value: str) -> Origin | None:
    """``(scheme, host, port)`` of an origin, or None if it is not one."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/"):
        return None
    return scheme, parts.hostname.lower(), port or DEFAULT_PORTS[scheme]


def allowed_hosts() -> list[str]:
    """``ALLOWED_HOSTS``, as Django's own host check reads it."""
    if settings.DEBUG and not settings.ALLOWED_HOSTS:
        return DEBUG_ALLOWED_HOSTS
    return settings.ALLOWED_HOSTS


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def own_origin(scope: dict[str, Any]) -> Origin | None:
    """The origin a page served by this host would have."""
    host = _header(scope, b"host")
    if not host:
        return None
    forwarded = (_header(scope, b"x-forwarded-proto") or "").split(",")[0].strip().lower()
    scheme = "https" if forwarded == "https" or scope.get("scheme") == "wss" else "http"
    return parse_origin(f"{scheme}://{host}")


class OriginValidator:
    """ASGI middleware: refuse WebSockets whose Origin is not allowed."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.application(scope, receive, send)
        host = _header(scope, b"host") or ""
        domain, _ = split_domain_port(host)
        origin = _header(scope, b"origin")
        reason = None
        if not domain or not validate_host(domain, allowed_hosts()):
            reason = "host not in ALLOWED_HOSTS"
        elif origin is not None:
            allowed = {own_origin(scope)} | {
                parse_origin(item) for item in push_settings.PUSH_ALLOWED_ORIGINS
            }
            if parse_origin(origin) not in allowed - {None}:
                reason = "origin not allowed"
        if reason is not None:
            client = scope.get("client") or ("?", 0)
            logger.info(
                "ws refused a handshake code=403 reason=%s origin=%r host=%r client=%s:%s",
                reason,
                (origin or "")[:100],
                host[:100],
                client[0],
                client[1],
            )
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(dict(scope, push_origin=origin), receive, send)
