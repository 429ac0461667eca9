"""Admin broadcasts: a message for everyone, a group, a user or a topic, sent now or later."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models

from ws import topics

__all__ = ["Broadcast"]


class Broadcast(models.Model):
    """One message shown as a banner on every open page of its audience.

    Sent by the admin action "Send now", by ``python manage.py broadcast``, or by
    beat once ``send_at`` has passed (``tasks.broadcasts.send_due``). ``sent_at``
    and ``subscribers`` record when it went out and to how many sockets.
    """

    class Level(models.TextChoices):
        INFO = "info", "info"
        WARNING = "warning", "warning"
        CRITICAL = "critical", "critical"

    class Target(models.TextChoices):
        EVERYONE = "everyone", "everyone"
        GROUP = "group", "a group"
        USER = "user", "a user"
        TOPIC = "topic", "a topic"

    title = models.CharField(max_length=200)
    body = models.TextField()
    level = models.CharField(max_length=16, choices=Level.choices, default=Level.INFO)
    target = models.CharField(max_length=16, choices=Target.choices, default=Target.EVERYONE)
    # Only the field matching ``target`` applies; ``clean()`` clears the others. A
    # deleted group or user leaves the record (and its history) with no audience.
    group = models.ForeignKey(
        Group, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="broadcasts_received",
    )
    topic = models.CharField(
        max_length=topics.MAX_TOPIC_LENGTH, blank=True, help_text="e.g. dashboard.sales"
    )
    send_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Sent by beat once this has passed; empty: only by Send now.",
    )
    sent_at = models.DateTimeField(null=True, blank=True, editable=False)
    subscribers = models.PositiveIntegerField(
        null=True, blank=True, editable=False, help_text="Sockets subscribed when it was sent."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        editable=False,
        on_delete=models.SET_NULL,
        related_name="broadcasts_created",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["sent_at", "send_at"], name="broadcast_due")]

    def __str__(self) -> str:
        return f"{self.title} ({self.level}, to {self.audience})"

    @property
    def audience(self) -> str:
        """Who it is for, in words: ``everyone``, ``group ops``, ``user alice``, ``topic x``."""
        if self.target == self.Target.GROUP:
            return f"group {self.group.name}" if self.group else "a deleted group"
        if self.target == self.Target.USER:
            return f"user {self.user.get_username()}" if self.user else "a deleted user"
        if self.target == self.Target.TOPIC:
            return f"topic {self.topic}"
        return "everyone"

    def clean(self) -> None:
        """Require the field the target needs (and a valid topic); clear the others."""
        required = {
            self.Target.GROUP: ("group", self.group_id, "Choose the group to send to."),
            self.Target.USER: ("user", self.user_id, "Choose the user to send to."),
            self.Target.TOPIC: ("topic", self.topic, "Name the topic to send to."),
        }
        if self.target in required:
            field, value, message = required[self.target]
            if not value:
                raise ValidationError({field: message})
        if self.target != self.Target.GROUP:
            self.group = None
        if self.target != self.Target.USER:
            self.user = None
        if self.target != self.Target.TOPIC:
            self.topic = ""
        if self.topic:
            try:
                self.topic = topics.resolve(self.topic).name
            except topics.UnknownTopic as exc:
                raise ValidationError({"topic": f"Not a topic: {exc}."}) from None
