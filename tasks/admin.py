"""Admin for broadcasts: write one, send it now or let beat send it at ``send_at``."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest
from django.utils.translation import ngettext

from tasks.models import Broadcast
from tasks.tasks import deliver_broadcast

CONTENT_FIELDS = ("title", "body", "level", "target", "group", "user", "topic", "send_at")
RECORD_FIELDS = ("sent_at", "subscribers", "created_by", "created_at")


@admin.register(Broadcast)
class BroadcastAdmin(admin.ModelAdmin):
    list_display = ("title", "level", "audience", "send_at", "sent_at", "subscribers")
    list_filter = ("level", "target", ("sent_at", admin.EmptyFieldListFilter))
    search_fields = ("title", "body")
    date_hierarchy = "created_at"
    autocomplete_fields = ("group", "user")
    fieldsets = (
        (None, {"fields": ("title", "body", "level")}),
        ("Audience", {"fields": ("target", "group", "user", "topic")}),
        ("Sending", {"fields": ("send_at", *RECORD_FIELDS)}),
    )
    actions = ("send_now",)

    @admin.display(description="target", ordering="target")
    def audience(self, obj: Broadcast) -> str:
        return obj.audience

    def get_readonly_fields(self, request: HttpRequest, obj: Broadcast | None = None) -> Any:
        # What went out stays as it went out: a sent broadcast's content is its record.
        if obj is not None and obj.sent_at is not None:
            return CONTENT_FIELDS + RECORD_FIELDS
        return RECORD_FIELDS

    def save_model(
        self, request: HttpRequest, obj: Broadcast, form: ModelForm, change: bool
    ) -> None:
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)

    @admin.action(description="Send now", permissions=["change"])
    def send_now(self, request: HttpRequest, queryset: QuerySet[Broadcast]) -> None:
        """Queue delivery of each selected broadcast not sent yet."""
        unsent = list(queryset.filter(sent_at__isnull=True).values_list("pk", flat=True))
        for pk in unsent:
            deliver_broadcast.delay_on_commit(pk)
        skipped = queryset.count() - len(unsent)
        if unsent:
            self.message_user(
                request,
                ngettext(
                    "%d broadcast is being sent.", "%d broadcasts are being sent.", len(unsent)
                )
                % len(unsent),
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%d broadcast was sent before: not sent again.",
                    "%d broadcasts were sent before: not sent again.",
                    skipped,
                )
                % skipped,
                messages.WARNING,
            )
