from django.contrib import admin

from chatsvc.attachments.models import Attachment


@admin.register(Attachment)
class AttachmentAdmin(admin.ModelAdmin):
    """Read-only: attachments change through the chat (upload, send, delete) and
    clean_attachments only, which keep the rows and the S3 objects in step."""

    list_display = (
        "id",
        "name",
        "status",
        "declared_type",
        "detected_type",
        "size",
        "tenant",
        "room",
        "user_id",
        "created_at",
        "attached_at",
    )
    list_filter = ("status", "tenant")
    search_fields = ("id", "user_id", "name", "room__connection_id", "ref")
    list_select_related = ("tenant", "room")
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
