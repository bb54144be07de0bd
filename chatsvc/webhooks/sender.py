"""The webhook sender: claims due deliveries from the outbox and POSTs them.

Many senders may run at once (every worker task runs one): a delivery is
claimed with a lease (`claimed_until`), taken under `SELECT ... FOR UPDATE
SKIP LOCKED` on PostgreSQL and by a compare-and-set update on SQLite, so no
two senders send it at the same time. A pool of threads sends; each thread
takes one endpoint's deliveries, oldest first, so a slow or dead endpoint
holds one thread for at most the request timeout, never the others.

2xx is delivered; anything else (also a redirect, a timeout, a refused
address) is retried with exponential backoff and jitter, per delivery and per
endpoint: after a failure nothing more is sent to that endpoint until its own
backoff has passed, so a dead endpoint with a deep backlog costs one request
per step. A delivery not delivered within CHAT_WEBHOOK_MAX_AGE_SECONDS fails
for good (replayable). An endpoint failing continuously for
CHAT_WEBHOOK_DISABLE_AFTER_SECONDS with at least
CHAT_WEBHOOK_DISABLE_AFTER_FAILURES failures is disabled, and the ERROR log
line `webhook endpoint disabled` raises the operators' alarm.
"""

import http.client
import logging
import random
import socket
import ssl
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import F, Min, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from chatsvc.webhooks import outbox, signing, urls
from chatsvc.webhooks.models import WebhookDelivery, WebhookEndpoint
from chatsvc.webhooks.services import secrets_of

logger = logging.getLogger(__name__)

USER_AGENT = "chatsvc-webhooks/1"
PER_ENDPOINT_BATCH = 20  # deliveries one thread takes for one endpoint per claim
EXPIRE_EVERY_SECONDS = 60
DISABLED_LOG_LINE = "webhook endpoint disabled"
# A stopping worker waits this long for sends in flight (each ends within the timeout).
STOP_TIMEOUT_SECONDS = 30


def _setting(name: str, default):
    return getattr(settings, name, default)


def backoff_seconds(failures: int) -> float:
    """Delay before the next attempt after `failures` failures in a row: 10 s doubling
    (CHAT_WEBHOOK_RETRY_BASE_SECONDS), capped at 1 h (CHAT_WEBHOOK_RETRY_MAX_SECONDS),
    each with +-25 % jitter."""
    base = _setting("CHAT_WEBHOOK_RETRY_BASE_SECONDS", 10)
    cap = _setting("CHAT_WEBHOOK_RETRY_MAX_SECONDS", 3600)
    delay = min(cap, base * 2 ** min(max(failures, 1) - 1, 30))
    return delay * random.uniform(0.75, 1.25)  # noqa: S311 - jitter, not security


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    status_code: int | None = None
    error: str = ""


def post(target: urls.Target, body: bytes, headers: dict) -> Outcome:
    """POST body to the checked address of target; no redirects, bounded in time:
    CHAT_WEBHOOK_CONNECT_TIMEOUT_SECONDS to connect (TCP and TLS),
    CHAT_WEBHOOK_TIMEOUT_SECONDS for the whole exchange."""
    connect_timeout = _setting("CHAT_WEBHOOK_CONNECT_TIMEOUT_SECONDS", 3)
    total = _setting("CHAT_WEBHOOK_TIMEOUT_SECONDS", 10)
    deadline = time.monotonic() + total
    if target.scheme == "https":
        conn = http.client.HTTPSConnection(
            target.host, target.port, timeout=connect_timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(target.host, target.port, timeout=connect_timeout)

    def pinned(address, timeout, source_address=None):
        # Connect to the address that was checked, not to a second DNS answer;
        # TLS still verifies the certificate against the host name.
        return socket.create_connection((target.address, address[1]), timeout, source_address)

    conn._create_connection = pinned
    watchdog = None
    try:
        conn.connect()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        conn.sock.settimeout(remaining)
        sock = conn.sock
        # Per-call socket timeouts do not bound a peer that trickles bytes: the
        # watchdog shuts the socket at the deadline (the blocked read then fails).
        watchdog = threading.Timer(remaining, _shutdown, args=(sock,))
        watchdog.daemon = True
        watchdog.start()
        conn.request("POST", target.path, body=body, headers=headers)
        response = conn.getresponse()
        status = response.status
    except TimeoutError:
        return Outcome(False, None, "timeout")
    except ssl.SSLError as exc:
        return Outcome(False, None, f"tls: {exc.reason or exc}"[:200])
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if time.monotonic() >= deadline:
            return Outcome(False, None, "timeout")
        return Outcome(False, None, f"{type(exc).__name__}: {exc}"[:200])
    finally:
        if watchdog is not None:
            watchdog.cancel()
        conn.close()
    if 200 <= status < 300:
        return Outcome(True, status)
    return Outcome(False, status, f"HTTP {status}")


def _shutdown(sock) -> None:
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass


def headers_for(delivery: WebhookDelivery, secrets: list[str], body: bytes) -> dict:
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Chatsvc-Event-Id": delivery.event_id,
        "Chatsvc-Event-Type": delivery.event_type,
        "Chatsvc-Delivery-Id": delivery.id,
        "Chatsvc-Signature": signing.header(secrets, int(time.time()), body),
    }


class Sender:
    """Sends due deliveries with a pool of threads until stop() (or, with once=True,
    until nothing is due)."""

    def __init__(self, *, threads: int | None = None, poll_seconds: float | None = None):
        self.threads = threads or _setting("CHAT_WEBHOOK_SENDER_THREADS", 4)
        self.poll_seconds = (
            poll_seconds if poll_seconds is not None else _setting("CHAT_WEBHOOK_POLL_SECONDS", 1)
        )
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._last_expiry = 0.0
        self.sent = 0
        self.delivered = 0

    def stop(self) -> None:
        """Claim nothing more; sends in flight finish (each within the timeout)."""
        self._stopping.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def lease_seconds(self) -> float:
        # Long enough for a whole endpoint batch at the worst timeout.
        total = _setting("CHAT_WEBHOOK_TIMEOUT_SECONDS", 10)
        connect = _setting("CHAT_WEBHOOK_CONNECT_TIMEOUT_SECONDS", 3)
        return (total + connect) * PER_ENDPOINT_BATCH + 60

    def run(self, *, once: bool = False) -> None:
        logger.info("webhook sender started", extra={"threads": self.threads, "once": once})
        in_flight: dict[str, Future] = {}
        failures = 0
        with ThreadPoolExecutor(self.threads, thread_name_prefix="webhook") as pool:
            while not self.stopping:
                self._wake.clear()
                in_flight = {eid: f for eid, f in in_flight.items() if not f.done()}
                capacity = self.threads - len(in_flight)
                claimed = {}
                try:
                    close_old_connections()
                    self._maybe_expire(force=once and not in_flight)
                    if capacity > 0:
                        claimed = self.claim(exclude=set(in_flight), endpoints=capacity)
                    failures = 0
                except DatabaseError as exc:
                    failures += 1
                    logger.warning("webhook claim failed", extra={"error": str(exc)[:200]})
                    connection.close()
                    self._stopping.wait(min(30.0, 0.5 * 2**failures))
                    continue
                for endpoint_id, ids in claimed.items():
                    in_flight[endpoint_id] = pool.submit(self._send_endpoint, endpoint_id, ids)
                if once and not claimed and not in_flight:
                    break
                if claimed and len(in_flight) < self.threads:
                    continue  # more may be due for other endpoints
                self._wake.wait(self.poll_seconds)
        connection.close()
        logger.info(
            "webhook sender stopped", extra={"sent": self.sent, "delivered": self.delivered}
        )

    # -- claiming ---------------------------------------------------------------------

    def _due(self, now):
        return WebhookDelivery.objects.filter(
            Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
            Q(endpoint__next_attempt_at__isnull=True) | Q(endpoint__next_attempt_at__lte=now),
            status=WebhookDelivery.Status.PENDING,
            next_attempt_at__lte=now,
            endpoint__is_enabled=True,
        )

    def claim(self, *, exclude: set, endpoints: int) -> dict[str, list[str]]:
        """Lease up to PER_ENDPOINT_BATCH due deliveries of each of at most `endpoints`
        endpoints (those waiting longest first): {endpoint id: [delivery ids, oldest first]}."""
        now = timezone.now()
        wanted = list(
            self._due(now)
            .exclude(endpoint_id__in=exclude)
            .values("endpoint_id")
            .annotate(oldest=Min("next_attempt_at"))
            .order_by("oldest")
            .values_list("endpoint_id", flat=True)[:endpoints]
        )
        until = now + timedelta(seconds=self.lease_seconds)
        claimed = {}
        for endpoint_id in wanted:
            ids = self._claim_endpoint(endpoint_id, now, until)
            if ids:
                claimed[endpoint_id] = ids
        return claimed

    def _claim_endpoint(self, endpoint_id: str, now, until) -> list[str]:
        rows = self._due(now).filter(endpoint_id=endpoint_id).order_by("id")
        if connection.features.has_select_for_update_skip_locked:
            with transaction.atomic():
                ids = list(
                    rows.select_for_update(skip_locked=True, of=("self",)).values_list(
                        "id", flat=True
                    )[:PER_ENDPOINT_BATCH]
                )
                WebhookDelivery.objects.filter(pk__in=ids).update(claimed_until=until)
            return ids
        # SQLite (local mode): no row locks; take each row only if its lease is
        # still free (compare-and-set), so concurrent senders never share one.
        ids = []
        for delivery_id, lease in rows.values_list("id", "claimed_until")[:PER_ENDPOINT_BATCH]:
            if WebhookDelivery.objects.filter(pk=delivery_id, claimed_until=lease).update(
                claimed_until=until
            ):
                ids.append(delivery_id)
        return ids

    def _maybe_expire(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._last_expiry < EXPIRE_EVERY_SECONDS:
            return
        self._last_expiry = time.monotonic()
        now = timezone.now()
        expired = WebhookDelivery.objects.filter(
            Q(claimed_until__isnull=True) | Q(claimed_until__lt=now),
            status=WebhookDelivery.Status.PENDING,
            retry_until__lt=now,
        ).update(
            status=WebhookDelivery.Status.FAILED,
            claimed_until=None,
            last_error="expired: not delivered within the retry window",
        )
        if expired:
            logger.warning("webhook deliveries expired", extra={"count": expired})

    # -- sending ----------------------------------------------------------------------

    def _send_endpoint(self, endpoint_id: str, ids: list[str]) -> None:
        try:
            endpoint = WebhookEndpoint.objects.filter(pk=endpoint_id, is_enabled=True).first()
            deliveries = {d.id: d for d in WebhookDelivery.objects.filter(pk__in=ids)}
            pending = [deliveries[i] for i in ids if i in deliveries]
            secrets = secrets_of(endpoint) if endpoint else []
            while pending and endpoint and secrets and not self.stopping:
                delivery = pending.pop(0)
                if not self._attempt(endpoint, delivery, secrets):
                    break  # the endpoint backs off; the rest wait for it
            if endpoint and not secrets:
                logger.error(
                    "webhook secret unreadable (SECRET_KEY changed?)",
                    extra={"endpoint_id": endpoint_id, "tenant_id": endpoint.tenant_id},
                )
            if pending:
                WebhookDelivery.objects.filter(pk__in=[d.id for d in pending]).update(
                    claimed_until=None
                )
        except Exception:
            # Leases run out by themselves; the deliveries are retried then.
            logger.exception("webhook endpoint batch failed", extra={"endpoint_id": endpoint_id})
        finally:
            connection.close()
            self._wake.set()

    def _attempt(self, endpoint: WebhookEndpoint, delivery: WebhookDelivery, secrets) -> bool:
        body = delivery.payload.encode()
        try:
            target = urls.resolve(endpoint.url)
        except urls.UrlRefused as exc:
            outcome = Outcome(False, None, f"refused: {exc}"[:200])
        else:
            outcome = post(target, body, headers_for(delivery, secrets, body))
        self.sent += 1
        now = timezone.now()
        attempts = delivery.attempts + 1
        if outcome.delivered:
            self.delivered += 1
            WebhookDelivery.objects.filter(pk=delivery.pk).update(
                status=WebhookDelivery.Status.DELIVERED,
                attempts=attempts,
                delivered_at=now,
                last_status_code=outcome.status_code,
                last_error="",
                claimed_until=None,
            )
            if endpoint.consecutive_failures or endpoint.next_attempt_at:
                WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
                    consecutive_failures=0, first_failure_at=None, next_attempt_at=None
                )
                endpoint.consecutive_failures, endpoint.next_attempt_at = 0, None
            return True

        retry_at = now + timedelta(seconds=backoff_seconds(attempts))
        gave_up = retry_at > delivery.retry_until
        WebhookDelivery.objects.filter(pk=delivery.pk).update(
            status=WebhookDelivery.Status.FAILED if gave_up else WebhookDelivery.Status.PENDING,
            attempts=attempts,
            next_attempt_at=retry_at,
            last_status_code=outcome.status_code,
            last_error=outcome.error[:200],
            claimed_until=None,
        )
        logger.warning(
            "webhook delivery failed",
            extra={
                "tenant_id": endpoint.tenant_id,
                "endpoint_id": endpoint.pk,
                "delivery_id": delivery.pk,
                "event_type": delivery.event_type,
                "attempts": attempts,
                "status_code": outcome.status_code,
                "error": outcome.error,
                "gave_up": gave_up,
            },
        )
        self._endpoint_failed(endpoint, now, outcome)
        return False

    def _endpoint_failed(self, endpoint: WebhookEndpoint, now, outcome: Outcome) -> None:
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
            consecutive_failures=F("consecutive_failures") + 1,
            first_failure_at=Coalesce(F("first_failure_at"), now),
        )
        endpoint.refresh_from_db(fields=["consecutive_failures", "first_failure_at", "is_enabled"])
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
            next_attempt_at=now + timedelta(seconds=backoff_seconds(endpoint.consecutive_failures))
        )
        after = timedelta(seconds=_setting("CHAT_WEBHOOK_DISABLE_AFTER_SECONDS", 86400))
        at_least = _setting("CHAT_WEBHOOK_DISABLE_AFTER_FAILURES", 10)
        if not (
            endpoint.is_enabled
            and endpoint.consecutive_failures >= at_least
            and endpoint.first_failure_at <= now - after
        ):
            return
        reason = (
            f"{endpoint.consecutive_failures} failures in a row since "
            f"{endpoint.first_failure_at:%Y-%m-%d %H:%M:%S} UTC; last: {outcome.error}"
        )[:200]
        # Conditional: one sender disables it and logs the alert, never two.
        if WebhookEndpoint.objects.filter(pk=endpoint.pk, is_enabled=True).update(
            is_enabled=False, disabled_at=now, disabled_reason=reason
        ):
            outbox.forget(endpoint.tenant_id)  # stop recording for it in this process now
            logger.error(
                DISABLED_LOG_LINE,
                extra={
                    "alert": "webhook_endpoint_disabled",
                    "tenant_id": endpoint.tenant_id,
                    "endpoint_id": endpoint.pk,
                    "url": endpoint.url,
                    "consecutive_failures": endpoint.consecutive_failures,
                    "first_failure_at": endpoint.first_failure_at.isoformat(),
                    "last_error": outcome.error,
                },
            )


def start_in_thread(*, threads: int | None = None) -> tuple[Sender, threading.Thread]:
    """A sender running in a daemon thread of this process (the worker role)."""
    sender = Sender(threads=threads)
    thread = threading.Thread(target=sender.run, name="webhook-sender", daemon=True)
    thread.start()
    return sender, thread
