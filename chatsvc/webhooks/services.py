"""Writes on webhook endpoints and deliveries. Secrets are returned once, stored encrypted."""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from chatsvc.tenants import secrets as tenant_secrets
from chatsvc.tenants.models import Tenant
from chatsvc.webhooks import signing, urls
from chatsvc.webhooks.models import WebhookDelivery, WebhookEndpoint
from chatsvc.webhooks.outbox import EVENT_TYPES

# After a rotation the previous secret keeps signing (a second v1=) this long.
PREVIOUS_SECRET_SECONDS = 24 * 3600


class InvalidEndpoint(ValueError):
    """A field of an endpoint is not acceptable: `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


class TooManyEndpoints(Exception):
    pass


@dataclass(frozen=True)
class CreatedEndpoint:
    endpoint: WebhookEndpoint
    secret: str  # the only time it exists in clear


def _event_types(types) -> list[str]:
    types = list(dict.fromkeys(types or ()))
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise InvalidEndpoint("event_types", f"unknown event type {unknown[0]!r}")
    return types


def _url(url: str) -> str:
    try:
        return urls.check(url)
    except urls.UrlRefused as exc:
        raise InvalidEndpoint("url", f"url {exc}") from exc


def secrets_of(endpoint: WebhookEndpoint, *, now=None) -> list[str]:
    """The secrets a delivery is signed with: the current one, then the previous one
    while it is still valid after a rotation. Unreadable ones are left out."""
    now = now or timezone.now()
    found = [tenant_secrets.decrypt_secret(endpoint.secret_encrypted)]
    if (
        endpoint.previous_secret_encrypted
        and endpoint.previous_secret_expires_at
        and endpoint.previous_secret_expires_at > now
    ):
        found.append(tenant_secrets.decrypt_secret(endpoint.previous_secret_encrypted))
    return [secret for secret in found if secret]


@transaction.atomic
def create_endpoint(
    *, tenant: Tenant, url: str, event_types=(), description: str = ""
) -> CreatedEndpoint:
    limit = settings.CHAT_WEBHOOK_MAX_ENDPOINTS
    # Lock the tenant row: two concurrent creations cannot both pass the limit.
    Tenant.objects.select_for_update().filter(pk=tenant.pk).first()
    if WebhookEndpoint.objects.filter(tenant=tenant).count() >= limit:
        raise TooManyEndpoints(f"a tenant may have at most {limit} webhook endpoints")
    secret = signing.new_secret()
    endpoint = WebhookEndpoint.objects.create(
        tenant=tenant,
        url=_url(url),
        event_types=_event_types(event_types),
        description=description,
        secret_encrypted=tenant_secrets.encrypt_secret(secret),
    )
    return CreatedEndpoint(endpoint=endpoint, secret=secret)


def update_endpoint(
    *,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    event_types=None,
    description: str | None = None,
    is_enabled: bool | None = None,
) -> WebhookEndpoint:
    """Change what is given. Enabling a disabled endpoint clears its failure record."""
    if url is not None:
        endpoint.url = _url(url)
    if event_types is not None:
        endpoint.event_types = _event_types(event_types)
    if description is not None:
        endpoint.description = description
    if is_enabled is True and not endpoint.is_enabled:
        _enable(endpoint)
    elif is_enabled is False and endpoint.is_enabled:
        endpoint.is_enabled = False
        endpoint.disabled_at = timezone.now()
        endpoint.disabled_reason = "disabled by the tenant"
    endpoint.save()
    return endpoint


def _enable(endpoint: WebhookEndpoint) -> None:
    endpoint.is_enabled = True
    endpoint.disabled_at = None
    endpoint.disabled_reason = ""
    endpoint.consecutive_failures = 0
    endpoint.first_failure_at = None
    endpoint.next_attempt_at = None


def enable_endpoint(*, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    _enable(endpoint)
    endpoint.save()
    return endpoint


def rotate_secret(*, endpoint: WebhookEndpoint) -> str:
    """A new secret, returned once. The previous one still signs for 24 h (a second
    `v1=` in Chatsvc-Signature), so receivers can switch without losing events."""
    secret = signing.new_secret()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_expires_at = timezone.now() + timedelta(
        seconds=PREVIOUS_SECRET_SECONDS
    )
    endpoint.secret_encrypted = tenant_secrets.encrypt_secret(secret)
    endpoint.save(
        update_fields=[
            "secret_encrypted",
            "previous_secret_encrypted",
            "previous_secret_expires_at",
        ]
    )
    return secret


def replay(*, deliveries) -> int:
    """Send these deliveries again, whatever their status: pending, due now, with a
    fresh retry window. The body (and its event id) is the same; the signature's
    timestamp is new. Returns how many were queued."""
    now = timezone.now()
    ids = [delivery.pk for delivery in deliveries]
    return WebhookDelivery.objects.filter(pk__in=ids).update(
        status=WebhookDelivery.Status.PENDING,
        next_attempt_at=now,
        retry_until=now + timedelta(seconds=settings.CHAT_WEBHOOK_MAX_AGE_SECONDS),
        claimed_until=None,
        delivered_at=None,
    )
