"""Rooms (open, members-only or direct between two users) and their messages."""

from __future__ import annotations

from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

# A room's slug is its topic's parameter (``chat.<slug>``): ws.topics' parameter alphabet.
SLUG_VALIDATOR = RegexValidator(
    r"^[A-Za-z0-9_-]{1,64}$", "letters, digits, _ or -, at most 64 characters"
)
# Direct conversations are ``dm-<lower user id>-<higher user id>``; other rooms may
# not take a name of that shape.
DIRECT_PREFIX = "dm-"
# Slugs starting with this name chat's own topics (``chat._rooms``), never a room.
RESERVED_PREFIX = "_"


def user_data(user: Any) -> dict[str, Any]:
    """A user as chat's pushes, pages and endpoints show one: ``{"id", "name"}``."""
    return {"id": user.pk, "name": user.get_username()}


class Room(models.Model):
    """A place messages are posted to; its topic is ``chat.<slug>``.

    Open rooms (``open_to_signed_in``) let any signed-in user read and post;
    the others only their ``members``. A direct conversation (``is_direct``)
    has exactly its two users as members and is never open: make one with
    ``chat.services.direct_room``. ``allow_client_messages`` lets seed-route
    clients (``heartbeat/<slug>/``) talk in the seed room of the same name.
    """

    slug = models.SlugField(max_length=64, unique=True, validators=[SLUG_VALIDATOR])
    title = models.CharField(max_length=200, blank=True)
    open_to_signed_in = models.BooleanField(
        default=False, help_text="Any signed-in user may read and post, not only members."
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, related_name="chat_rooms", blank=True
    )
    allow_client_messages = models.BooleanField(
        default=False,
        help_text="Seed-route clients (heartbeat/<slug>/) may talk in the room.",
    )
    is_direct = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["slug"]
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.CheckConstraint(
                condition=~Q(is_direct=True, open_to_signed_in=True),
                name="chat_direct_room_not_open",
            )
        ]

    def __str__(self) -> str:
        return self.title or self.slug

    @property
    def topic(self) -> str:
        return f"chat.{self.slug}"

    def clean(self) -> None:
        if not self.is_direct and self.slug.startswith(DIRECT_PREFIX):
            raise ValidationError({"slug": f"'{DIRECT_PREFIX}…' names direct conversations"})
        if self.slug.startswith(RESERVED_PREFIX):
            raise ValidationError({"slug": f"'{RESERVED_PREFIX}…' is kept for chat's own topics"})


class Message(models.Model):
    """One message in a room, stored before it is pushed (after commit).

    ``kind`` is ``text`` for what people write, ``missed_call`` for the note a
    call nobody answered leaves (its ``call`` set, its author the caller).
    """

    class Kind(models.TextChoices):
        TEXT = "text"
        MISSED_CALL = "missed_call"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="messages")
    # A deleted user's messages stay in the conversation, without an author.
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    text = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.TEXT)
    call = models.ForeignKey(
        "Call", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    # The topic's seq it was pushed as, once pushed (after commit) in this process.
    seq: int | None = None

    class Meta:
        ordering = ["id"]
        indexes: ClassVar[list[models.Index]] = [
            models.Index(fields=["room", "-id"], name="chat_message_room_id")
        ]

    def __str__(self) -> str:
        return f"{self.room.slug} #{self.pk}"

    def as_data(self) -> dict[str, object]:
        """The message as pushed and as the history endpoint lists it."""
        return {
            "id": self.pk,
            "room": self.room.slug,
            "author": None if self.author is None else user_data(self.author),
            "text": self.text,
            "created_at": self.created_at,
            "kind": self.kind,
            "call": self.call_id,
        }


class Call(models.Model):
    """A voice call in a room: ringing, then active, then ended (see ``chat.calls``).

    A room has at most one live (ringing or active) call, which the database
    enforces; its signalling topic is ``call.<room slug>``.
    """

    class State(models.TextChoices):
        RINGING = "ringing"
        ACTIVE = "active"
        ENDED = "ended"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="calls")
    state = models.CharField(max_length=8, choices=State.choices, default=State.RINGING)
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    answered_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=16, blank=True)
    # Pairs of participants (user ids, smaller first) whose peer connection a page gave up
    # on after ICE restarts failed; cleared when either of the two renegotiates or leaves.
    lost_links = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(
                fields=["room"],
                condition=Q(state__in=["ringing", "active"]),
                name="chat_one_live_call_per_room",
            )
        ]

    def __str__(self) -> str:
        return f"call {self.pk} in {self.room_id} ({self.state})"


class CallParticipant(models.Model):
    """A user's part in a call: in it from ``joined_at`` until ``left_at``, or declined.

    One row per call and user; joining again (after a hang-up) moves ``joined_at``
    forward, so the order of ``joined_at`` is the order newcomers arrived in. A
    participant whose sockets are gone stays in the call, ``reconnecting_since``
    set, until they come back or the grace period ends.
    """

    call = models.ForeignKey(Call, on_delete=models.CASCADE, related_name="participants")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    joined_at = models.DateTimeField(null=True, blank=True)
    left_at = models.DateTimeField(null=True, blank=True)
    declined_at = models.DateTimeField(null=True, blank=True)
    # Set while their last socket on the call's topic is gone, for CALL_REJOIN_GRACE_S.
    reconnecting_since = models.DateTimeField(null=True, blank=True)
    # Their microphone is off (they said so): shown to the others, kept across a reload.
    muted = models.BooleanField(default=False)

    class Meta:
        ordering = ["joined_at", "id"]
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["call", "user"], name="chat_call_participant_once")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in call {self.call_id}"

    @property
    def in_call(self) -> bool:
        return self.joined_at is not None and self.left_at is None


class RoomReader(models.Model):
    """A user's place in a room: the last message they read, and whether its calls ring them.

    Made when a user first marks a room read (or asks an open room to ring them).
    Unread counts are the room's messages after ``last_read`` not written by the
    user. Members of members-only and direct rooms are rung for every call; an
    open room rings only its readers with ``ring`` on.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="readers")
    last_read = models.PositiveBigIntegerField(null=True, blank=True)
    ring = models.BooleanField(default=False, help_text="Calls in this open room ring the user.")

    class Meta:
        constraints: ClassVar[list[models.BaseConstraint]] = [
            models.UniqueConstraint(fields=["user", "room"], name="chat_room_reader_once")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.room_id} (read to {self.last_read})"
