from django.contrib import admin, messages

from chatsvc.rooms import services
from chatsvc.rooms.models import Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ("connection_id", "title", "tenant", "status", "created_at")
    list_filter = ("status", "tenant")
    search_fields = ("connection_id", "title", "tenant__slug")
    readonly_fields = ("connection_id", "created_at", "closed_at", "status")
    list_select_related = ("tenant",)
    actions = ["close_rooms"]

    @admin.action(description="Close selected rooms (members are told at once)")
    def close_rooms(self, request, queryset):
        for room in queryset.filter(status=Room.Status.OPEN):
            services.close_room(room=room)
        self.message_user(request, "Rooms closed.", messages.WARNING)
