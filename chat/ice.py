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

__all__ = ["IceServer", "ice_servers", "stun_of_turn", "turn_credential"]


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


def stun_of_turn(turn_urls: list[str]) -> list[str]:
    """``stun:host:port`` for each plain ``turn:`` URL: a TURN server answers STUN there too."""
    found: list[str] = []
    for url in turn_urls:
        scheme, _, rest = url.partition(":")
        stun = f"stun:{rest.partition('?')[0]}"
        if scheme == "turn" and stun not in found:
            found.append(stun)
    return found


def ice_servers(user: Any) -> dict[str, Any]:
    """The ``RTCConfiguration`` for ``user``'s peer connections, and when it expires.

    ``{"iceServers": [...], "iceTransportPolicy": "all" | "relay", "expires_at":
    <Unix seconds or null>, "expires_in": <seconds or null>}`` (``expires_in`` spares
    the page from trusting its own clock). STUN from ``CALL_ICE_SERVERS`` (unset: the TURN
    servers' hosts); TURN from ``CALL_TURN_URLS`` when ``CALL_TURN_SECRET`` is
    set, with a credential made now: pages ask again on every (re)connection
    and ICE restart, so a call outliving ``CALL_TURN_TTL_S`` still gets a relay.
    """
    servers: list[IceServer] = []
    turn_on = bool(settings.CALL_TURN_URLS and settings.CALL_TURN_SECRET)
    stun = settings.CALL_ICE_SERVERS or (stun_of_turn(settings.CALL_TURN_URLS) if turn_on else [])
    if stun:
        servers.append({"urls": list(stun)})
    expires_at = None
    if turn_on:
        username, credential, expires_at = turn_credential(user.pk)
        servers.append(
            {"urls": list(settings.CALL_TURN_URLS), "username": username, "credential": credential}
        )
    return {
        "iceServers": servers,
        "iceTransportPolicy": settings.CALL_ICE_TRANSPORT_POLICY,
        "expires_at": expires_at,
        "expires_in": None if expires_at is None else int(settings.CALL_TURN_TTL_S),
    }
