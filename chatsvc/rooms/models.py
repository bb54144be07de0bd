from django.db import models
from django.utils import timezone

from chatsvc.core.ulid import new_ulid
from chatsvc.tenants.models import Tenant


class Room(models.Model):
    """A ConnectionId: the room a tenant's users join over WebSocket."""

    class Status(models.TextChoices):
        OPEN = "open"
        CLOSED = "closed"

    connection_id = models.CharField(
        primary_key=True, max_length=26, default=new_ulid, editable=False
    )
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="rooms")
    title = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "-created_at"]),
            # GET /api/v1/connections: a tenant's rooms newest first, by status.
            # (Its metadata filter uses a GIN index that exists on PostgreSQL only:
            # rooms_room_metadata_gin, created in migration 0002.)
            models.Index(fields=["tenant", "-connection_id"], name="rooms_tenant_newest_idx"),
            models.Index(
                fields=["tenant", "status", "-connection_id"], name="rooms_tenant_status_idx"
            ),
        ]

    def __str__(self) -> str:
        return self.title or self.connection_id

    @property
    def is_open(self) -> bool:
        return self.status == self.Status.OPEN


class RoomRemoval(models.Model):
    """A user removed (banned) from a room: their sockets left it, and they cannot
    join it again until re-admitted (the row is deleted: REST PUT, a moderator's
    `unban`, or the admin) or until `until`, when one is set."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="removals")
    user_id = models.CharField(max_length=128, help_text="The token subject (LMS user id).")
    removed_at = models.DateTimeField(default=timezone.now)
    until = models.DateTimeField(null=True, blank=True, help_text="Empty: until lifted.")
    removed_by = models.CharField(
        max_length=128,
        blank=True,
        help_text="Who: a moderator's user id, or the user the API named.",
    )
    by_moderator = models.BooleanField(
        default=False,
        help_text="A moderator's ban, which moderators may lift; else the tenant's removal, "
        "which only the tenant (API or admin) lifts.",
    )
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-removed_at"]
        constraints = [
            models.UniqueConstraint(fields=["room", "user_id"], name="one_removal_per_room_user")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} removed from {self.room_id}"


class RoomMute(models.Model):
    """A user muted in a room until `until`: they stay and read, but cannot send,
    edit, react or type there (chatsvc.rooms.moderation)."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="mutes")
    user_id = models.CharField(max_length=128, help_text="The token subject (LMS user id).")
    until = models.DateTimeField()
    muted_at = models.DateTimeField(default=timezone.now)
    muted_by = models.CharField(
        max_length=128, blank=True, help_text="The moderator's user id; empty: the tenant's API."
    )
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-muted_at"]
        constraints = [
            models.UniqueConstraint(fields=["room", "user_id"], name="one_mute_per_room_user")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} muted in {self.room_id} until {self.until:%Y-%m-%d %H:%M}"

    @property
    def is_active(self) -> bool:
        return self.until > timezone.now()


def revokes(revoked_at: float | None, issued_at: float) -> bool:
    """Whether a revocation at `revoked_at` (epoch seconds; None: none) refuses a
    token issued at `issued_at`: tokens issued in or before its second are refused."""
    return revoked_at is not None and issued_at <= revoked_at


class UserRevocation(models.Model):
    """Every session of a tenant's user up to `revoked_at`: tokens issued (iat) at
    or before that moment are refused and the user's live sockets are closed."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="user_revocations")
    user_id = models.CharField(max_length=128, help_text="The token subject (LMS user id).")
    revoked_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-revoked_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "user_id"], name="one_revocation_per_tenant_user"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user_id} of {self.tenant_id} revoked at {self.revoked_at:%Y-%m-%d %H:%M:%S}"

    def refuses(self, issued_at: int) -> bool:
        """Tokens issued in or before the second of the revocation are refused."""
        return revokes(self.revoked_at.timestamp(), issued_at)
