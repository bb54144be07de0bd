"""Recording events into the webhook outbox: one delivery per subscribed endpoint.

    from chatsvc.webhooks import outbox
    outbox.record([{"id": new_ulid(), "type": outbox.MESSAGE_CREATED, "tenant_id": ...,
                    "connection_id": ..., "occurred_at": "2026-11-26T10:00:01.123Z",
                    "data": {...}}])

`record` is synchronous and idempotent (unique endpoint + event id, so an
at-least-once caller such as the SQS worker may record an event again);
`arecord` is its async twin, to be run in a background task so that chat
never waits for it. Run inside a transaction, the deliveries commit or roll
back with it. A tenant without endpoints costs no query while its (empty)
entry is cached (CHAT_WEBHOOK_ENDPOINT_CACHE_SECONDS, default 5 s, per
process); endpoint changes made in this process clear the cache at once.
"""

import json
import logging
import threading
import time
from collections.abc import Iterable
from datetime import timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from chatsvc.webhooks.models import WebhookDelivery, WebhookEndpoint

logger = logging.getLogger(__name__)

MESSAGE_CREATED = "message.created"
MESSAGE_EDITED = "message.edited"
MESSAGE_DELETED = "message.deleted"
REACTION_CHANGED = "reaction.changed"
ROOM_CLOSED = "room.closed"
MEMBER_JOINED = "member.joined"
MEMBER_LEFT = "member.left"
MODERATION_ACTION = "moderation.action"
EVENT_TYPES = (
    MESSAGE_CREATED,
    MESSAGE_EDITED,
    MESSAGE_DELETED,
    REACTION_CHANGED,
    ROOM_CLOSED,
    MEMBER_JOINED,
    MEMBER_LEFT,
    MODERATION_ACTION,
)
_REQUIRED = ("id", "type", "tenant_id", "occurred_at", "data")

_lock = threading.Lock()
# tenant id -> (monotonic expiry, [(endpoint id, subscribed types or None for all)])
_cache: dict[str, tuple[float, list[tuple[str, frozenset | None]]]] = {}


def body_of(event: dict) -> str:
    """The JSON text sent (and signed) for an event: compact, keys in this order."""
    return json.dumps(
        {
            "id": event["id"],
            "type": event["type"],
            "created_at": event["occurred_at"],
            "tenant_id": event["tenant_id"],
            "connection_id": event.get("connection_id"),
            "data": event["data"],
        },
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _validate(event: dict) -> None:
    if not isinstance(event, dict):
        raise ValueError(f"an event is a dict, not {type(event).__name__}")
    missing = [key for key in _REQUIRED if key not in event]
    if missing:
        raise ValueError(f"event lacks {missing}")
    if event["type"] not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event['type']!r}")
    if not isinstance(event["id"], str) or not 0 < len(event["id"]) <= 64:
        raise ValueError("event id must be a string of 1-64 characters")
    if not isinstance(event["data"], dict):
        raise ValueError("event data must be a dict")


def endpoints_of(tenant_ids: set[str]) -> dict[str, list[tuple[str, frozenset | None]]]:
    """Enabled endpoints per tenant: one query for the tenants not cached."""
    ttl = getattr(settings, "CHAT_WEBHOOK_ENDPOINT_CACHE_SECONDS", 5)
    now = time.monotonic()
    found, missing = {}, set()
    with _lock:
        for tenant_id in tenant_ids:
            entry = _cache.get(tenant_id)
            if entry is not None and entry[0] > now:
                found[tenant_id] = entry[1]
            else:
                missing.add(tenant_id)
    if missing:
        loaded: dict[str, list] = {tenant_id: [] for tenant_id in missing}
        rows = WebhookEndpoint.objects.filter(tenant_id__in=missing, is_enabled=True).values_list(
            "id", "tenant_id", "event_types"
        )
        for endpoint_id, tenant_id, types in rows:
            loaded[tenant_id].append((endpoint_id, frozenset(types) if types else None))
        with _lock:
            for tenant_id, endpoints in loaded.items():
                if ttl > 0:
                    _cache[tenant_id] = (now + ttl, endpoints)
        found.update(loaded)
    return found


def forget(tenant_id: str | None = None) -> None:
    """Drop cached endpoints (of one tenant, or all)."""
    with _lock:
        if tenant_id is None:
            _cache.clear()
        else:
            _cache.pop(tenant_id, None)


def record(events: Iterable[dict]) -> int:
    """Queue each event for every enabled endpoint of its tenant subscribed to its type.

    `events`: dicts {"id", "type", "tenant_id", "connection_id" (or None),
    "occurred_at" (ISO-8601 text), "data" (a JSON-able dict)}. All are
    validated first: a malformed one raises ValueError and nothing is recorded.
    Idempotent per (endpoint, event id). Returns the number of deliveries
    offered to the database (existing ones are skipped there).
    """
    events = list(events)
    for event in events:
        _validate(event)
    if not events:
        return 0
    endpoints = endpoints_of({event["tenant_id"] for event in events})
    now = timezone.now()
    retry_until = now + timedelta(seconds=settings.CHAT_WEBHOOK_MAX_AGE_SECONDS)
    rows = []
    for event in events:
        targets = [
            endpoint_id
            for endpoint_id, types in endpoints.get(event["tenant_id"], ())
            if types is None or event["type"] in types
        ]
        if not targets:
            continue
        body = body_of(event)
        rows.extend(
            WebhookDelivery(
                endpoint_id=endpoint_id,
                event_id=event["id"],
                event_type=event["type"],
                connection_id=event.get("connection_id"),
                payload=body,
                next_attempt_at=now,
                retry_until=retry_until,
                created_at=now,
            )
            for endpoint_id in targets
        )
    if rows:
        WebhookDelivery.objects.bulk_create(rows, ignore_conflicts=True, batch_size=500)
    return len(rows)


async def arecord(events: Iterable[dict]) -> int:
    """`record` for async code, in a thread of its own: run it in a background task
    (asyncio.create_task) so that chat never waits for the database. Tenants known
    (cached) to have no endpoints cost no thread hop: most joins and leaves."""
    events = list(events)
    for event in events:
        _validate(event)
    if _known_without_endpoints({event["tenant_id"] for event in events}):
        return 0
    return await database_sync_to_async(record)(events)


def _known_without_endpoints(tenant_ids: set[str]) -> bool:
    now = time.monotonic()
    with _lock:
        return all(
            (entry := _cache.get(tenant_id)) is not None and entry[0] > now and not entry[1]
            for tenant_id in tenant_ids
        )


def _endpoint_changed(sender, instance, **kwargs):
    forget(instance.tenant_id)


def connect_signals() -> None:
    post_save.connect(_endpoint_changed, sender=WebhookEndpoint, dispatch_uid="webhooks-saved")
    post_delete.connect(_endpoint_changed, sender=WebhookEndpoint, dispatch_uid="webhooks-deleted")
