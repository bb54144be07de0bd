"""What the usage page shows of one tenant: per bucket, every query scoped by tenant.

Counters come from `UsageHour` (summed or maxed per day), distinct users from
`UsageUser` (counted per bucket: a day's users are counted over the day, not
summed over its hours), webhook failures from the webhooks app's delivery
rows at read time (nothing is counted twice), live sockets now from the web
processes' latest samples.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db.models import Case, Count, F, IntegerField, Q, Sum, When
from django.db.models.functions import Trunc

from chatsvc.core.ulid import ALPHABET
from chatsvc.tenants.models import Tenant
from chatsvc.usage import recorder
from chatsvc.usage.models import UsageHour, UsageUser
from chatsvc.webhooks.models import WebhookDelivery, WebhookEndpoint


@dataclass(frozen=True)
class Period:
    key: str
    name: str
    buckets: int
    step: timedelta
    span: int  # UsageUser.HOUR or UsageUser.DAY
    trunc: str  # Trunc kind


HOURS = Period("hours", "Last 48 hours, by hour", 48, timedelta(hours=1), UsageUser.HOUR, "hour")
DAYS = Period("days", "Last 30 days, by day", 30, timedelta(days=1), UsageUser.DAY, "day")
PERIODS = {p.key: p for p in (HOURS, DAYS)}


@dataclass
class Bucket:
    start: datetime
    messages: int = 0
    content_events: int = 0
    active_users: int = 0
    max_live_sockets: int = 0
    max_queue_lag_ms: int = 0
    webhook_failed_attempts: int = 0
    webhook_given_up: int = 0
    endpoints_disabled: int = 0

    @property
    def max_queue_lag_seconds(self) -> float:
        return round(self.max_queue_lag_ms / 1000, 1)


@dataclass
class Usage:
    tenant: Tenant
    period: Period
    buckets: list[Bucket]
    live_now: int | None  # None: unknown (Redis unreachable)
    disabled_endpoints: list[WebhookEndpoint] = field(default_factory=list)

    def total(self, name: str) -> int:
        return sum(getattr(b, name) for b in self.buckets)

    def peak(self, name: str) -> int:
        return max((getattr(b, name) for b in self.buckets), default=0)


def _floor(moment: datetime, period: Period) -> datetime:
    return recorder.hour_of(moment) if period is HOURS else recorder.day_of(moment)


def ulid_floor(moment: datetime) -> str:
    """The smallest ULID of a moment: ULID keys sort by time."""
    value = int(moment.timestamp() * 1000) << 80
    return "".join(ALPHABET[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def tenant_usage(*, tenant: Tenant, period: Period, now: datetime | None = None) -> Usage:
    now = now or datetime.now(UTC)
    last = _floor(now, period)
    starts = [last - period.step * i for i in reversed(range(period.buckets))]
    start = starts[0]
    buckets = {s: Bucket(start=s) for s in starts}

    for row in UsageHour.objects.filter(tenant=tenant, hour__gte=start).values(
        "hour", "messages", "content_events", "max_live_sockets", "max_queue_lag_ms"
    ):
        bucket = buckets.get(_floor(row["hour"], period))
        if bucket is None:
            continue  # ahead of now (a sender's clock)
        bucket.messages += row["messages"]
        bucket.content_events += row["content_events"]
        bucket.max_live_sockets = max(bucket.max_live_sockets, row["max_live_sockets"])
        bucket.max_queue_lag_ms = max(bucket.max_queue_lag_ms, row["max_queue_lag_ms"])

    users = (
        UsageUser.objects.filter(tenant=tenant, span=period.span, bucket__gte=start)
        .values("bucket")
        .annotate(n=Count("id"))
    )
    for row in users:
        if (bucket := buckets.get(row["bucket"])) is not None:
            bucket.active_users = row["n"]

    for row in _webhook_failures(tenant, period, start):
        if (bucket := buckets.get(row["bucket"])) is not None:
            bucket.webhook_failed_attempts = row["failed"] or 0
            bucket.webhook_given_up = row["given_up"]

    disabled = WebhookEndpoint.objects.filter(tenant=tenant, disabled_at__gte=start).values_list(
        "disabled_at", flat=True
    )
    for moment in disabled:
        if (bucket := buckets.get(_floor(moment, period))) is not None:
            bucket.endpoints_disabled += 1

    return Usage(
        tenant=tenant,
        period=period,
        buckets=list(buckets.values()),
        live_now=recorder.live_sockets(tenant.id),
        disabled_endpoints=list(
            WebhookEndpoint.objects.filter(tenant=tenant, is_enabled=False).order_by(
                "-disabled_at"
            )[:20]
        ),
    )


def _webhook_failures(tenant: Tenant, period: Period, start: datetime):
    """Failed attempts per bucket of the events' time: a delivered row's attempts
    but the last, every attempt of a pending or given-up row; and given-up rows.

    The rows say how many attempts failed, not when: failures count in the
    bucket the event happened in. `id` (a ULID) bounds the scan to the period
    on the (endpoint, status, id) index.
    """
    delivered = WebhookDelivery.Status.DELIVERED
    return (
        WebhookDelivery.objects.filter(
            endpoint__tenant=tenant, id__gte=ulid_floor(start), created_at__gte=start
        )
        .filter(
            Q(status=WebhookDelivery.Status.FAILED)
            | Q(status=WebhookDelivery.Status.PENDING, attempts__gt=0)
            | Q(status=delivered, attempts__gt=1)
        )
        .annotate(bucket=Trunc("created_at", period.trunc, tzinfo=UTC))
        .values("bucket")
        .annotate(
            failed=Sum(
                Case(
                    When(status=delivered, then=F("attempts") - 1),
                    default=F("attempts"),
                    output_field=IntegerField(),
                )
            ),
            given_up=Count("id", filter=Q(status=WebhookDelivery.Status.FAILED)),
        )
        .order_by()
    )
