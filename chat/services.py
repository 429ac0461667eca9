"""What chat does: who may read and post, sending, direct conversations, history.

Every way in (a socket's ``publish`` on ``chat.<room>``, the HTTP endpoint)
calls ``send_message``: membership, validation, the per-user rate limit, the
row, and the push to ``chat.<room>`` once the transaction commits (a rolled
back message is never pushed). Refusals are ``ChatError`` subclasses that
carry the socket error code and the HTTP status they are answered with.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q, QuerySet
from redis.exceptions import RedisError

from chat import ratelimit
from chat.models import DIRECT_PREFIX, Message, Room, user_data
from ws.protocol import CloseCode
from ws.push import ephemeral, push

__all__ = [
    "ChatError",
    "InvalidMessage",
    "NotAllowed",
    "RateLimited",
    "can_read",
    "check_reader",
    "check_user_ids",
    "direct_room",
    "history",
    "post_note",
    "readable_rooms",
    "send_message",
    "send_typing",
]

logger = logging.getLogger("chat")

MESSAGE_MSG = "chat.message"


class ChatError(Exception):
    """A refused chat action: ``code`` for an error frame, ``status`` for HTTP."""

    code: ClassVar[CloseCode]
    status: ClassVar[int]


class NotAllowed(ChatError):
    """Not a member of the room (or no such room, or not signed in)."""

    code = CloseCode.FORBIDDEN
    status = 403


class InvalidMessage(ChatError):
    """Empty, too long, or not a message at all."""

    code = CloseCode.MALFORMED
    status = 400


class RateLimited(ChatError):
    """Over ``CHAT_RATE_MESSAGES`` in ``CHAT_RATE_WINDOW_S``; ``retry_after_s`` says when."""

    code = CloseCode.RATE_LIMITED
    status = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _signed_in(user: Any) -> bool:
    return bool(user is not None and user.is_authenticated and user.is_active)


def readable_rooms(user: Any) -> QuerySet[Room]:
    """The rooms ``user`` may read: open ones and those they are a member of."""
    if not _signed_in(user):
        return Room.objects.none()
    return Room.objects.filter(Q(open_to_signed_in=True) | Q(members=user)).distinct()


def can_read(user: Any, room: Room) -> bool:
    """Whether ``user`` may read (and so post in and subscribe to) ``room``."""
    if not _signed_in(user):
        return False
    return room.open_to_signed_in or room.members.filter(pk=user.pk).exists()


def check_reader(user: Any, room: Room) -> None:
    """Raise ``NotAllowed`` unless ``user`` may read ``room`` (``can_read``)."""
    if not can_read(user, room):
        raise NotAllowed("not a member of this room")


def can_read_slug(user: Any, slug: str | None) -> bool:
    """``can_read`` by the room's slug (a topic's parameter); no such room: no."""
    return bool(slug) and readable_rooms(user).filter(slug=slug).exists()


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise InvalidMessage("text must be a string")
    text = text.strip()
    if not text:
        raise InvalidMessage("message is empty")
    limit = settings.CHAT_MAX_MESSAGE_CHARS
    if len(text) > limit:
        raise InvalidMessage(f"message is longer than {limit} characters")
    return text


def _take_rate(user: Any) -> None:
    wait_s = ratelimit.take(user.pk)
    if wait_s > 0:
        raise RateLimited(
            f"rate limited: over {settings.CHAT_RATE_MESSAGES} messages in "
            f"{settings.CHAT_RATE_WINDOW_S:g} s; retry in {wait_s:.1f} s",
            wait_s,
        )


def send_message(user: Any, room: Room, text: object) -> Message:
    """Store ``text`` from ``user`` in ``room`` and push it to ``chat.<slug>`` after commit.

    Raises ``NotAllowed``, ``InvalidMessage`` or ``RateLimited``. Inside an outer
    transaction the push waits for its commit, and a rollback pushes nothing.
    Once pushed, ``message.seq`` is the topic's sequence number of the push.
    """
    check_reader(user, room)
    text = _check_text(text)
    _take_rate(user)
    with transaction.atomic():
        message = Message.objects.create(room=room, author=user, text=text)
        transaction.on_commit(lambda: _push(message))
    return message


def post_note(room: Room, author: Any, text: str, *, kind: str, call: Any = None) -> Message:
    """A message the server writes (``kind``: a ``Message.Kind``), pushed after commit like any.

    No membership check and no rate limit: what it says happened (a missed call).
    """
    message = Message.objects.create(room=room, author=author, text=text, kind=kind, call=call)
    transaction.on_commit(lambda: _push(message))
    return message


def _push(message: Message) -> None:
    """Push a committed message, then its room's unread counts. Redis away: it stays in the
    history endpoint, logged."""
    from chat import unread

    try:
        message.seq = push(
            message.room.topic, message.as_data(), msg=MESSAGE_MSG, key=f"chat:{message.pk}"
        )
        unread.after_message(message)
    except (RedisError, OSError) as error:
        logger.warning("chat message %s stored but not all pushed: %s", message.pk, error)


def send_typing(user: Any, room: Room) -> None:
    """Tell the room's subscribers ``user`` is typing: not stored, not numbered, not replayed."""
    check_reader(user, room)
    ephemeral(room.topic, {"type": "typing", "user": user_data(user)})


def check_user_ids(value: Any, name: str, limit: int) -> list[int]:
    """``value`` as a list of at most ``limit`` user ids (None: none); ``InvalidMessage`` else."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > limit:
        raise InvalidMessage(f'"{name}" must be a list of at most {limit} user ids')
    if not all(isinstance(item, int) and not isinstance(item, bool) for item in value):
        raise InvalidMessage(f'"{name}" must list user ids (integers)')
    return value


def direct_slug(user_a: Any, user_b: Any) -> str:
    low, high = sorted((int(user_a.pk), int(user_b.pk)))
    return f"{DIRECT_PREFIX}{low}-{high}"


def direct_room(user_a: Any, user_b: Any) -> Room:
    """The direct conversation of two users, made on first use (same room either way round)."""
    return find_or_make_direct_room(user_a, user_b)[0]


def find_or_make_direct_room(user_a: Any, user_b: Any) -> tuple[Room, bool]:
    """``direct_room``, and whether this call made it."""
    if not (_signed_in(user_a) and user_b is not None and user_b.is_active):
        raise NotAllowed("direct conversations are between two active users")
    if user_a.pk == user_b.pk:
        raise InvalidMessage("a direct conversation needs two different users")
    slug = direct_slug(user_a, user_b)
    with transaction.atomic():
        room, created = Room.objects.get_or_create(
            slug=slug,
            defaults={
                "is_direct": True,
                "title": f"{user_a.get_username()} & {user_b.get_username()}",
            },
        )
        if not room.is_direct:  # an old room took the name: never hand it out as a DM
            raise NotAllowed("that conversation name is taken by a room")
        if created:
            room.members.add(user_a, user_b)
    return room, created


def direct_partner(room: Room, user: Any) -> Any:
    """The other user of a direct conversation (None if gone).

    Reads ``room.members.all()``, so a list of rooms fetched with
    ``prefetch_related("members")`` costs no query per room.
    """
    return next((member for member in room.members.all() if member.pk != user.pk), None)


def history(
    user: Any, room: Room, *, before: int | None = None, limit: int | None = None
) -> list[Message]:
    """Up to ``limit`` messages before id ``before`` (the newest when None), oldest first."""
    check_reader(user, room)
    page = settings.CHAT_HISTORY_PAGE_SIZE if limit is None else limit
    if not 1 <= page <= settings.CHAT_HISTORY_PAGE_MAX:
        raise InvalidMessage(f"limit must be 1 to {settings.CHAT_HISTORY_PAGE_MAX}")
    messages = room.messages.select_related("author", "room").order_by("-id")
    if before is not None:
        messages = messages.filter(id__lt=before)
    return list(reversed(messages[:page]))


def user_by_id(user_id: int) -> Any:
    """An active user by id, or None."""
    return get_user_model()._default_manager.filter(pk=user_id, is_active=True).first()
