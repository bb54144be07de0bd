"""Webhook endpoints of tenants and the delivery outbox the sender works through."""

from django.db import models
from django.utils import timezone

from chatsvc.core.ulid import new_ulid
from chatsvc.tenants.models import Tenant


class WebhookEndpoint(models.Model):
    """A tenant's HTTPS URL that receives signed POSTs for the event types it subscribed to."""

    id = models.CharField(primary_key=True, max_length=26, default=new_ulid, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=2048)
    event_types = models.JSONField(
        default=list, blank=True, help_text="Event types sent to this endpoint; empty: all."
    )
    description = models.CharField(max_length=200, blank=True)
    # The signing secret, encrypted like the tenants' signing secrets (tenants/secrets.py).
    secret_encrypted = models.TextField(editable=False)
    # After a rotation the previous secret signs too (a second v1=) until this moment.
    previous_secret_encrypted = models.TextField(blank=True, editable=False)
    previous_secret_expires_at = models.DateTimeField(null=True, blank=True, editable=False)
    is_enabled = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=200, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    first_failure_at = models.DateTimeField(null=True, blank=True)
    # After a failure nothing is sent to the endpoint before this (endpoint backoff):
    # a dead endpoint with a deep backlog costs one attempt per backoff step.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "is_enabled"], name="webhooks_tenant_enabled_idx")
        ]

    def __str__(self) -> str:
        return f"{self.url} ({self.id})"

    def subscribes_to(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


class WebhookDelivery(models.Model):
    """One event for one endpoint: the outbox row the sender claims, sends and retries."""

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"  # permanently: retries exhausted (replay sends it again)

    id = models.CharField(primary_key=True, max_length=26, default=new_ulid, editable=False)
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event_id = models.CharField(max_length=64)
    event_type = models.CharField(max_length=64)
    connection_id = models.CharField(max_length=26, null=True, blank=True)  # noqa: DJ001 - None: no room
    payload = models.TextField(help_text="The exact JSON body that is signed and sent.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # Retries stop (status failed) once this has passed; a replay moves it.
    retry_until = models.DateTimeField()
    # A sender's lease: while in the future, another sender leaves the row alone.
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "event_id"], name="one_delivery_per_event")
        ]
        indexes = [
            # The sender's claim: due pending rows, oldest due first.
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status="pending"),
                name="webhooks_due_idx",
            ),
            # REST and admin: an endpoint's recent deliveries, by status.
            models.Index(fields=["endpoint", "status", "-id"], name="webhooks_endpoint_recent_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.event_id} -> {self.endpoint_id}"
