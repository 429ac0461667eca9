from django.contrib import admin

from chat.models import Message, Room


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
