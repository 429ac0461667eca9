from django.contrib import admin

from chat.models import Call, CallParticipant, Message, Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ("slug", "title", "open_to_signed_in", "allow_client_messages", "is_direct")
    list_filter = ("open_to_signed_in", "allow_client_messages", "is_direct")
    search_fields = ("slug", "title")
    filter_horizontal = ("members",)
    readonly_fields = ("is_direct", "created_at")


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("id", "room", "author", "created_at", "text")
    list_filter = ("room",)
    search_fields = ("text",)
    raw_id_fields = ("room", "author")
    readonly_fields = ("created_at",)


class CallParticipantInline(admin.TabularInline):
    model = CallParticipant
    raw_id_fields = ("user",)
    readonly_fields = ("reconnecting_since",)
    extra = 0


@admin.register(Call)
class CallAdmin(admin.ModelAdmin):
    """Calls, to look at: their state changes go through ``chat.calls`` (and are pushed)."""

    list_display = ("id", "room", "state", "started_by", "created_at", "ended_at", "end_reason")
    list_filter = ("state", "end_reason")
    raw_id_fields = ("room", "started_by")
    readonly_fields = ("created_at", "lost_links")
    inlines = (CallParticipantInline,)
