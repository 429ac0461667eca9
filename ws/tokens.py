"""Short-lived signed tokens for clients that cannot send a session cookie.

A token names a user and carries their session-auth hash, so changing the
password (or deactivating the user) revokes every token issued before. It is
signed with ``SECRET_KEY`` and expires after ``PUSH_TOKEN_MAX_AGE_S``. Tokens are
never logged.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core import signing
from django.utils.crypto import constant_time_compare

from ws.conf import push_settings

__all__ = ["BadToken", "issue_token", "user_for_token"]

TOKEN_SALT = "ws.tokens"  # noqa: S105 - a namespace, not a secret


class BadToken(Exception):
    """The token cannot authenticate anyone; ``reason`` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def issue_token(user: Any) -> str:
    """A token for ``user``, valid for ``PUSH_TOKEN_MAX_AGE_S`` seconds."""
    return signing.dumps({"u": user.pk, "h": user.get_session_auth_hash()}, salt=TOKEN_SALT)


def user_for_token(token: object) -> Any:
    """The active user a token names, or ``BadToken`` (sync: it reads the database)."""
    if not isinstance(token, str) or not token or len(token) > 1024:
        raise BadToken("malformed")
    try:
        claims = signing.loads(token, salt=TOKEN_SALT, max_age=push_settings.PUSH_TOKEN_MAX_AGE_S)
    except signing.SignatureExpired:
        raise BadToken("expired") from None
    except signing.BadSignature:
        raise BadToken("bad signature") from None
    if not isinstance(claims, dict) or not isinstance(claims.get("h"), str):
        raise BadToken("malformed")
    user = get_user_model()._default_manager.filter(pk=claims.get("u")).first()
    if user is None or not user.is_active:
        raise BadToken("no such active user")
    if not constant_time_compare(claims["h"], user.get_session_auth_hash()):
        raise BadToken("revoked (password changed)")
    return user
