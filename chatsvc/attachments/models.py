from django.db import models
from django.utils import timezone

from chatsvc.core.ulid import new_ulid
from chatsvc.rooms.models import Room
from chatsvc.tenants.models import Tenant


class Attachment(models.Model):
    """A file a user uploads straight to S3 (presigned POST) and attaches to one message.

    pending: the upload was granted (the object may or may not exist yet);
    attached: its bytes were verified and a message (`ref`) references it;
    rejected: its bytes did not match the declared type or size (object deleted);
    deleted: its message was deleted, it expired or was never claimed (object deleted).
    See docs/attachments.md.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        ATTACHED = "attached"
        REJECTED = "rejected"
        DELETED = "deleted"

    id = models.CharField(primary_key=True, max_length=26, default=new_ulid, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="attachments")
    room = models.ForeignKey(
        Room, on_delete=models.CASCADE, related_name="attachments", db_column="connection_id"
    )
    user_id = models.CharField(max_length=128, help_text="The uploader (token subject).")
    name = models.CharField(max_length=255, help_text="The original file name, for display.")
    declared_type = models.CharField(max_length=127)
    detected_type = models.CharField(max_length=127, blank=True)
    size = models.PositiveBigIntegerField()
    key = models.CharField(max_length=1024)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    # NULL until a message claims it (not "": an empty ref is no message).
    ref = models.CharField(  # noqa: DJ001
        max_length=200, null=True, blank=True, help_text="The message (its idempotency key)."
    )
    created_at = models.DateTimeField(default=timezone.now)
    attached_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The per-user quota of pending uploads.
            models.Index(fields=["tenant", "user_id", "status"], name="attach_user_status_idx"),
            # clean_attachments: stale pending ones, expired attached ones.
            models.Index(fields=["status", "created_at"], name="attach_status_created_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.id})"
