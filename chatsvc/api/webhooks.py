"""REST API v1: webhook endpoints, their deliveries and replays (docs/webhooks.md).

Registered on the API in chatsvc.api.views (`api.add_router("", webhooks_router)`).
Endpoints are scoped by tenant: another tenant's endpoint (or delivery) is a
404, like a missing one. The signing secret is in the creation and rotation
answers only; it is stored encrypted and never shown again.
"""

from datetime import datetime
from typing import Annotated, Literal

from django.http import Http404
from ninja import Field, Path, Query, Router, Schema, Status
from pydantic import field_validator

from chatsvc.api.errors import ApiError
from chatsvc.api.schemas import CURSOR_PATTERN, ErrorOut, _storable
from chatsvc.webhooks import services
from chatsvc.webhooks.models import WebhookDelivery, WebhookEndpoint
from chatsvc.webhooks.outbox import EVENT_TYPES

router = Router(tags=["webhooks"])

ERRORS = {401: ErrorOut, 422: ErrorOut, 429: ErrorOut}
ONE_ERRORS = {401: ErrorOut, 404: ErrorOut, 422: ErrorOut, 429: ErrorOut}
EXAMPLE_WEBHOOK = "01JD7X5M1N2P3Q4R5S6T7V8W9X"

EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
WebhookId = Annotated[
    str,
    Path(
        description="A webhook endpoint id of yours. Another tenant's is a 404, like a missing one."
    ),
]
DeliveryId = Annotated[str, Path(description="A delivery id of this endpoint.")]
Url = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2048,
        description="Where deliveries are POSTed: https, on a host that resolves only to "
        "public addresses (docs/webhooks.md#ssrf-rules).",
        examples=["https://lms.example.edu/chatsvc/webhook"],
    ),
]
EventTypes = Annotated[
    list[EventType],
    Field(
        max_length=len(EVENT_TYPES),
        description="The event types to send; empty: all of them (also types added later).",
    ),
]
Description = Annotated[str, Field(max_length=200, description="Yours; at most 200 characters.")]


class WebhookIn(Schema):
    url: Url
    event_types: EventTypes = Field(default_factory=list)
    description: Description = ""

    _storable = field_validator("url", "description")(_storable)


class WebhookPatch(Schema):
    url: Url | None = None
    event_types: EventTypes | None = None
    description: Description | None = None
    is_enabled: bool | None = Field(
        None,
        description="`true` re-enables a disabled endpoint (its failure count starts "
        "again); `false` pauses it (events meanwhile are not recorded for it).",
    )

    _storable = field_validator("url", "description")(_storable)


class WebhookOut(Schema):
    id: str = Field(examples=[EXAMPLE_WEBHOOK])
    url: str
    event_types: list[str] = Field(description="Empty: every event type.")
    description: str
    is_enabled: bool
    disabled_at: datetime | None = None
    disabled_reason: str = Field(
        description="Why it was disabled (by you, or after sustained failure)."
    )
    consecutive_failures: int = Field(description="Failed attempts since the last success.")
    first_failure_at: datetime | None = Field(
        None, description="The first of those failures; `null` while healthy."
    )
    created_at: datetime


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(
        description="Verifies `Chatsvc-Signature` (docs/webhooks.md). Shown only now."
    )


class WebhooksOut(Schema):
    webhooks: list[WebhookOut]


class SecretOut(Schema):
    id: str
    secret: str = Field(
        description="The new secret, shown only now. The previous one also signs (a second "
        "`v1=`) for 24 hours, so switch within a day."
    )


class DeliveryOut(Schema):
    id: str
    event_id: str
    event_type: str
    connection_id: str | None = None
    status: Literal["pending", "delivered", "failed"] = Field(
        description="`pending`: not delivered yet, retried at `next_attempt_at`; `failed`: "
        "retries exhausted (replay sends it again)."
    )
    attempts: int
    next_attempt_at: datetime | None = None
    last_status_code: int | None = None
    last_error: str
    created_at: datetime
    delivered_at: datetime | None = None


class DeliveriesOut(Schema):
    deliveries: list[DeliveryOut]
    next: str | None = Field(
        description="Pass as `before` for the next, older page; null at the end."
    )


class DeliveriesQuery(Schema):
    status: Literal["pending", "delivered", "failed"] | None = None
    before: str = Field("", pattern=CURSOR_PATTERN, description="A delivery id (exclusive).")
    limit: int = Field(50, ge=1, le=100, description="Page size, 1-100.")


def _endpoint(request, webhook_id: str) -> WebhookEndpoint:
    endpoint = WebhookEndpoint.objects.filter(pk=webhook_id, tenant=request.auth).first()
    if endpoint is None:  # another tenant's endpoint is as absent as a missing one
        raise Http404
    return endpoint


def _out(endpoint: WebhookEndpoint) -> dict:
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "event_types": endpoint.event_types,
        "description": endpoint.description,
        "is_enabled": endpoint.is_enabled,
        "disabled_at": endpoint.disabled_at,
        "disabled_reason": endpoint.disabled_reason,
        "consecutive_failures": endpoint.consecutive_failures,
        "first_failure_at": endpoint.first_failure_at,
        "created_at": endpoint.created_at,
    }


def _delivery(delivery: WebhookDelivery) -> dict:
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "connection_id": delivery.connection_id,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "next_attempt_at": (
            delivery.next_attempt_at if delivery.status == WebhookDelivery.Status.PENDING else None
        ),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "created_at": delivery.created_at,
        "delivered_at": delivery.delivered_at,
    }


def _invalid(exc: services.InvalidEndpoint):
    detail = {"loc": ["body", exc.field], "msg": str(exc), "type": "value_error"}
    return ApiError(422, "invalid_request", "request validation failed", [detail])


@router.get("/webhooks", response={200: WebhooksOut, **ERRORS}, summary="List your webhooks")
def list_webhooks(request):
    """Your webhook endpoints, newest first (at most CHAT_WEBHOOK_MAX_ENDPOINTS, 20),
    with their health: `consecutive_failures`, and when disabled why."""
    endpoints = WebhookEndpoint.objects.filter(tenant=request.auth).order_by("-id")
    return {"webhooks": [_out(endpoint) for endpoint in endpoints]}


@router.post(
    "/webhooks",
    response={201: WebhookCreatedOut, 409: ErrorOut, **ERRORS},
    summary="Register a webhook",
)
def create_webhook(request, payload: WebhookIn):
    """Registers an endpoint for the given event types (none: all). The answer
    holds the signing `secret`, **shown only this once**. A URL that is not https
    or whose host resolves to a private, loopback, link-local or otherwise
    non-public address is a 422 naming `url`; 409 `too_many_webhooks` past
    CHAT_WEBHOOK_MAX_ENDPOINTS (20) endpoints."""
    try:
        created = services.create_endpoint(
            tenant=request.auth,
            url=payload.url,
            event_types=payload.event_types,
            description=payload.description,
        )
    except services.InvalidEndpoint as exc:
        raise _invalid(exc) from exc
    except services.TooManyEndpoints as exc:
        raise ApiError(409, "too_many_webhooks", str(exc)) from exc
    return Status(201, {**_out(created.endpoint), "secret": created.secret})


@router.get(
    "/webhooks/{webhook_id}", response={200: WebhookOut, **ONE_ERRORS}, summary="Get a webhook"
)
def get_webhook(request, webhook_id: WebhookId):
    """One of your endpoints (never its secret)."""
    return _out(_endpoint(request, webhook_id))


@router.patch(
    "/webhooks/{webhook_id}", response={200: WebhookOut, **ONE_ERRORS}, summary="Change a webhook"
)
def update_webhook(request, webhook_id: WebhookId, payload: WebhookPatch):
    """Changes what is given: `url` (checked like at registration), `event_types`,
    `description`, `is_enabled` (`true` re-enables an endpoint disabled after
    failures; its pending deliveries younger than a day are sent again)."""
    endpoint = _endpoint(request, webhook_id)
    try:
        services.update_endpoint(
            endpoint=endpoint,
            url=payload.url,
            event_types=payload.event_types,
            description=payload.description,
            is_enabled=payload.is_enabled,
        )
    except services.InvalidEndpoint as exc:
        raise _invalid(exc) from exc
    return _out(endpoint)


@router.delete(
    "/webhooks/{webhook_id}",
    response={204: None, 401: ErrorOut, 404: ErrorOut, 429: ErrorOut},
    summary="Delete a webhook",
)
def delete_webhook(request, webhook_id: WebhookId):
    """Deletes the endpoint and its deliveries: nothing more is sent to it."""
    _endpoint(request, webhook_id).delete()
    return Status(204, None)


@router.post(
    "/webhooks/{webhook_id}/rotate-secret",
    response={200: SecretOut, **ONE_ERRORS},
    summary="Rotate a webhook's secret",
)
def rotate_webhook_secret(request, webhook_id: WebhookId):
    """A new signing secret, **shown only this once**. For 24 hours deliveries carry
    two signatures (`v1=` with the new secret and `v1=` with the previous one), so a
    receiver that accepts any matching `v1` loses nothing while it switches."""
    endpoint = _endpoint(request, webhook_id)
    return {"id": endpoint.id, "secret": services.rotate_secret(endpoint=endpoint)}


@router.get(
    "/webhooks/{webhook_id}/deliveries",
    response={200: DeliveriesOut, **ONE_ERRORS},
    summary="List a webhook's deliveries",
)
def list_webhook_deliveries(request, webhook_id: WebhookId, query: Query[DeliveriesQuery]):
    """The endpoint's deliveries, newest first, a page at a time (`limit` 1-100,
    default 50), optionally of one `status`: each with its attempts, the last
    HTTP status or error, and when the next attempt is due."""
    endpoint = _endpoint(request, webhook_id)
    rows = endpoint.deliveries.order_by("-id")
    if query.status:
        rows = rows.filter(status=query.status)
    if query.before:
        rows = rows.filter(id__lt=query.before)
    page = list(rows[: query.limit + 1])
    more = len(page) > query.limit
    page = page[: query.limit]
    return {"deliveries": [_delivery(d) for d in page], "next": page[-1].id if more else None}


@router.post(
    "/webhooks/{webhook_id}/deliveries/{delivery_id}/replay",
    response={200: DeliveryOut, **ONE_ERRORS},
    summary="Send a delivery again",
)
def replay_webhook_delivery(request, webhook_id: WebhookId, delivery_id: DeliveryId):
    """Queues the delivery again, whatever its status: the same body and event id
    (de-duplicate on `Chatsvc-Event-Id`), a new signature timestamp, a fresh day
    of retries. Sent once the endpoint is enabled."""
    endpoint = _endpoint(request, webhook_id)
    delivery = endpoint.deliveries.filter(pk=delivery_id).first()
    if delivery is None:
        raise Http404
    services.replay(deliveries=[delivery])
    delivery.refresh_from_db()
    return _delivery(delivery)
