from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from chatsvc.core.ulid import new_ulid


class Tenant(models.Model):
    """An LMS backend that owns rooms and mints tokens for its users."""

    id = models.CharField(primary_key=True, max_length=26, default=new_ulid, editable=False)
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=64, unique=True)
    is_active = models.BooleanField(default=True)
    allowed_origins = models.TextField(
        blank=True,
        help_text="Browser origins allowed to open WebSockets, one per line "
        "(e.g. https://lms.example.edu). Empty: any origin.",
    )
    max_frame_bytes = models.PositiveIntegerField(
        default=16384, validators=[MinValueValidator(256), MaxValueValidator(65536)]
    )
    messages_per_second = models.PositiveIntegerField(
        default=5, validators=[MinValueValidator(1), MaxValueValidator(1000)]
    )
    max_sockets_per_user = models.PositiveIntegerField(
        default=10,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Concurrent WebSockets one user (token subject) may hold; more are closed 4409.",
    )
    retention_days = models.PositiveIntegerField(
        default=365, help_text="Days messages are kept in history; 0 keeps them forever."
    )
    message_edit_seconds = models.PositiveIntegerField(
        default=900,
        validators=[MaxValueValidator(30 * 86400)],
        help_text="How long after sending a user may edit their message; 0: no edits. "
        "Deleting one's own message has no time limit.",
    )
    attachment_max_bytes = models.PositiveIntegerField(
        default=10 * 1024 * 1024,
        validators=[MaxValueValidator(100 * 1024 * 1024)],
        help_text="Largest file a user may attach, in bytes; 0: no attachments.",
    )
    attachment_types = models.TextField(
        default="image/png\nimage/jpeg\nimage/gif\nimage/webp\napplication/pdf\ntext/plain",
        blank=True,
        help_text="Content types users may attach, one per line (checked against the "
        "uploaded bytes, not the name). Empty: none.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def origins(self) -> list[str]:
        return [line.strip() for line in self.allowed_origins.splitlines() if line.strip()]

    @property
    def allowed_attachment_types(self) -> list[str]:
        return [line.strip() for line in self.attachment_types.splitlines() if line.strip()]

    def origin_allowed(self, origin: str | None) -> bool:
        # Non-browser clients send no Origin; browsers always do, and can't fake it.
        allowed = self.origins
        return not allowed or origin is None or origin in allowed


class TenantKey(models.Model):
    """An API key plus a JWT signing secret. Several may be active to rotate."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="keys")
    key_id = models.CharField(max_length=32, unique=True, editable=False)
    api_key_hash = models.CharField(max_length=64, editable=False)
    signing_secret_encrypted = models.TextField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.key_id

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
