import logging

from botocore.exceptions import BotoCoreError, ClientError
from django.contrib import admin, messages
from django.utils.html import format_html, format_html_join

from chatsvc.messaging.dynamo import fetch_history
from chatsvc.rooms import services
from chatsvc.rooms.models import Room, RoomMute, RoomRemoval, UserRevocation

logger = logging.getLogger(__name__)
RECENT_MESSAGES = 20


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ("connection_id", "title", "tenant", "status", "created_at")
    list_filter = ("status", "tenant")
    search_fields = ("connection_id", "title", "tenant__slug")
    readonly_fields = ("connection_id", "created_at", "closed_at", "status", "recent_messages")
    list_select_related = ("tenant",)
    actions = ["close_rooms"]

    @admin.action(description="Close selected rooms (members are told at once)")
    def close_rooms(self, request, queryset):
        for room in queryset.filter(status=Room.Status.OPEN):
            services.close_room(room=room)
        self.message_user(request, "Rooms closed.", messages.WARNING)

    @admin.display(description=f"Recent messages (newest first, up to {RECENT_MESSAGES})")
    def recent_messages(self, room: Room):
        if not room.pk:
            return "-"
        try:
            found, _ = fetch_history(connection_id=room.connection_id, limit=RECENT_MESSAGES)
        except (BotoCoreError, ClientError) as exc:
            logger.warning("history unavailable in admin", extra={"error": str(exc)})
            return f"History is unavailable right now ({type(exc).__name__})."
        if not found:
            return "No messages stored yet."
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{} ({})</td><td>{}</td></tr>",
            ((m["ts"], m["sender"]["name"], m["sender"]["id"], _shown_body(m)) for m in found),
        )
        return format_html(
            "<table><tr><th>time</th><th>sender</th><th>body</th></tr>{}</table>", rows
        )


def _shown_body(message: dict) -> str:
    if message.get("deleted"):
        by = (message.get("deleted_by") or {}).get("id") or "the tenant's API"
        return f"(deleted by {by})"
    return message["body"] + (" (edited)" if "edited_at" in message else "")


@admin.register(RoomRemoval)
class RoomRemovalAdmin(admin.ModelAdmin):
    """Users removed (banned) from rooms. Adding one here removes the user at once;
    lifting (deleting) it lets them join again. A ban with an end lifts itself."""

    list_display = ("user_id", "room", "tenant", "removed_at", "until", "removed_by", "reason")
    list_filter = ("room__tenant",)
    search_fields = ("user_id", "room__connection_id", "room__title")
    raw_id_fields = ("room",)
    readonly_fields = ("removed_at",)
    list_select_related = ("room__tenant",)
    actions = ["lift"]

    @admin.display(description="Tenant", ordering="room__tenant")
    def tenant(self, removal: RoomRemoval):
        return removal.room.tenant

    @admin.action(description="Lift selected removals (the users may join again)")
    def lift(self, request, queryset):
        count = 0
        for removal in queryset.select_related("room"):
            services.readmit_member(room=removal.room, user_id=removal.user_id)
            count += 1
        self.message_user(request, f"{count} removal(s) lifted.", messages.SUCCESS)


@admin.register(RoomMute)
class RoomMuteAdmin(admin.ModelAdmin):
    """Users muted in rooms: they read but cannot send, edit, react or type until the
    mute ends. Adding or changing one here applies at once; lifting (deleting) it
    unmutes them."""

    list_display = ("user_id", "room", "tenant", "until", "in_force", "muted_by", "reason")
    list_filter = ("room__tenant",)
    search_fields = ("user_id", "room__connection_id", "room__title")
    raw_id_fields = ("room",)
    readonly_fields = ("muted_at",)
    list_select_related = ("room__tenant",)
    actions = ["lift"]

    @admin.display(description="Tenant", ordering="room__tenant")
    def tenant(self, mute: RoomMute):
        return mute.room.tenant

    @admin.display(description="In force", boolean=True)
    def in_force(self, mute: RoomMute):
        return mute.is_active

    @admin.action(description="Lift selected mutes (the users may write again)")
    def lift(self, request, queryset):
        count = 0
        for mute in queryset:  # one by one: each deletion tells the live sockets
            mute.delete()
            count += 1
        self.message_user(request, f"{count} mute(s) lifted.", messages.SUCCESS)


@admin.register(UserRevocation)
class UserRevocationAdmin(admin.ModelAdmin):
    """Users whose sessions were revoked: tokens issued at or before `revoked at` are
    refused. Adding one here closes the user's sockets at once; lifting (deleting) it
    makes their earlier tokens valid again."""

    list_display = ("user_id", "tenant", "revoked_at")
    list_filter = ("tenant",)
    search_fields = ("user_id", "tenant__slug")
    list_select_related = ("tenant",)
    actions = ["lift"]

    @admin.action(description="Lift selected revocations (earlier tokens work again)")
    def lift(self, request, queryset):
        count, _ = queryset.delete()
        self.message_user(request, f"{count} revocation(s) lifted.", messages.SUCCESS)
