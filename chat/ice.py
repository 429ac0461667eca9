"""ICE servers for the browsers' ``RTCPeerConnection``: STUN, and TURN with short-lived credentials.

TURN credentials follow the TURN REST scheme (coturn's ``use-auth-secret`` /
``static-auth-secret``): the username is ``<expiry>:<user id>`` (expiry in Unix
seconds, ``CALL_TURN_TTL_S`` ahead) and the password is
``base64(HMAC-SHA1(CALL_TURN_SECRET, username))``. The TURN server checks the
HMAC with the same secret and refuses the username once its expiry has passed,
so nothing is stored and a leaked credential dies by itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any, TypedDict

from django.conf import settings

__all__ = ["IceServer", "ice_servers", "turn_credential"]


class IceServer(TypedDict, total=False):
    """One entry of ``RTCConfiguration.iceServers``."""

    urls: list[str]
    username: str
    credential: str


def turn_credential(user_id: object, *, now: float | None = None) -> tuple[str, str, int]:
    """A TURN username, its password and its expiry (Unix seconds) for ``user_id``."""
    expires = int(time.time() if now is None else now) + int(settings.CALL_TURN_TTL_S)
    username = f"{expires}:{user_id}"
    digest = hmac.new(settings.CALL_TURN_SECRET.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii"), expires


def ice_servers(user: Any) -> dict[str, Any]:
    """``{"iceServers": [...], "expires_at": <Unix seconds or null>}`` for ``user``.

    STUN from ``CALL_ICE_SERVERS``; TURN from ``CALL_TURN_URLS`` when
    ``CALL_TURN_SECRET`` is set. Ask again before ``expires_at``.
    """
    servers: list[IceServer] = []
    if settings.CALL_ICE_SERVERS:
        servers.append({"urls": list(settings.CALL_ICE_SERVERS)})
    expires_at = None
    if settings.CALL_TURN_URLS and settings.CALL_TURN_SECRET:
        username, credential, expires_at = turn_credential(user.pk)
        servers.append(
            {"urls": list(settings.CALL_TURN_URLS), "username": username, "credential": credential}
        )
    return {"iceServers": servers, "expires_at": expires_at}
