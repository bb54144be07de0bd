from django.db import models

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
        indexes = [models.Index(fields=["tenant", "-created_at"])]

    def __str__(self) -> str:
        return self.title or self.connection_id

    @property
    def is_open(self) -> bool:
        return self.status == self.Status.OPEN
