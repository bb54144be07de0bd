"""The sender against real HTTP receivers on loopback, on the real database."""

import json
import logging
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from chatsvc.webhooks import outbox, services
from chatsvc.webhooks.models import WebhookDelivery, WebhookEndpoint
from chatsvc.webhooks.sender import Sender
from tests.webhooks.conftest import drain, event

pytestmark = pytest.mark.django_db(transaction=True)


def register(issued, url, **fields):
    return services.create_endpoint(tenant=issued.tenant, url=url, **fields)


def test_a_500_is_retried_and_then_delivered_once(acme, receivers):
    receiver = receivers(statuses=[500])
    created = register(acme, receiver.url)
    sent = event(acme.tenant)
    outbox.record([sent])

    drain(until=lambda: WebhookDelivery.objects.filter(status="delivered").exists())

    first, second = receiver.wait_for(2)
    assert len(receiver.requests) == 2  # retried once, delivered once: nothing more
    assert first["status"] == 500 and second["status"] == 200
    assert first["body"] == second["body"]  # the same body, signed again
    assert json.loads(second["body"])["id"] == sent["id"]
    for request in (first, second):
        assert request["headers"]["Chatsvc-Event-Id"] == sent["id"]
        assert request["headers"]["Chatsvc-Event-Type"] == "message.created"
        assert request["headers"]["Content-Type"] == "application/json"
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)
    assert delivery.delivered_at is not None and delivery.last_error == ""
    endpoint = WebhookEndpoint.objects.get(pk=created.endpoint.pk)
    assert endpoint.consecutive_failures == 0 and endpoint.first_failure_at is None
    drain()  # nothing is due any more: nothing is sent
    assert len(receiver.requests) == 2


def test_a_slow_endpoint_does_not_hold_up_another(acme, receivers, settings):
    settings.CHAT_WEBHOOK_TIMEOUT_SECONDS = 2
    slow = receivers(delay=6)
    fast = receivers()
    register(acme, slow.url, description="slow")
    register(acme, fast.url, description="fast")
    outbox.record([event(acme.tenant) for _ in range(3)])

    sender = Sender(threads=4, poll_seconds=0.05)
    started = time.monotonic()
    thread = threading.Thread(target=sender.run)
    thread.start()
    try:
        fast.wait_for(3, timeout=5)
        fast_done = max(r["at"] for r in fast.requests) - started
        assert len(fast.requests) == 3
        assert fast_done < 1.5, f"the fast endpoint waited {fast_done:.2f}s"
        assert len(slow.requests) == 1  # the first one is hanging; the others wait for it
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            failed = WebhookDelivery.objects.filter(endpoint__url=slow.url, attempts=1).first()
            if failed:
                break
            time.sleep(0.05)
        timed_out = time.monotonic() - started
    finally:
        sender.stop()
        thread.join(15)
    assert failed is not None and failed.last_error == "timeout" and failed.status == "pending"
    assert 1.9 < timed_out < 3.5, f"the request took {timed_out:.2f}s, not the 2 s timeout"
    assert WebhookDelivery.objects.filter(endpoint__url=fast.url, status="delivered").count() == 3


def test_sustained_failure_disables_the_endpoint_and_logs_the_alert(
    acme, receivers, settings, caplog
):
    settings.CHAT_WEBHOOK_DISABLE_AFTER_SECONDS = 0
    settings.CHAT_WEBHOOK_DISABLE_AFTER_FAILURES = 3
    receiver = receivers(statuses=[503] * 100)
    created = register(acme, receiver.url)
    outbox.record([event(acme.tenant)])

    with caplog.at_level(logging.WARNING, logger="chatsvc.webhooks.sender"):
        drain(until=lambda: not WebhookEndpoint.objects.get(pk=created.endpoint.pk).is_enabled)
        drain()  # a disabled endpoint gets nothing more

    assert len(receiver.requests) == 3
    endpoint = WebhookEndpoint.objects.get(pk=created.endpoint.pk)
    assert endpoint.disabled_at is not None and endpoint.consecutive_failures == 3
    assert "3 failures in a row" in endpoint.disabled_reason
    assert "HTTP 503" in endpoint.disabled_reason
    alerts = [r for r in caplog.records if r.getMessage() == "webhook endpoint disabled"]
    assert len(alerts) == 1
    (alert,) = alerts
    assert alert.levelno == logging.ERROR
    assert alert.tenant_id == acme.tenant.id and alert.endpoint_id == endpoint.id
    assert alert.alert == "webhook_endpoint_disabled"
    # Disabled: new events are not even recorded for it.
    outbox.record([event(acme.tenant)])
    assert WebhookDelivery.objects.count() == 1
    # Re-enabled: its pending delivery goes out.
    receiver.statuses.clear()
    services.enable_endpoint(endpoint=endpoint)
    drain(until=lambda: WebhookDelivery.objects.filter(status="delivered").exists())
    assert receiver.requests[-1]["status"] == 200


def test_a_delivery_is_given_up_after_the_maximum_age(acme, receivers, settings):
    receiver = receivers(statuses=[500])
    register(acme, receiver.url)
    outbox.record([event(acme.tenant)])
    # Its retry window ends before the next retry would be due.
    WebhookDelivery.objects.update(retry_until=timezone.now() + timedelta(seconds=5))
    settings.CHAT_WEBHOOK_RETRY_BASE_SECONDS = settings.CHAT_WEBHOOK_RETRY_MAX_SECONDS = 10
    drain()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("failed", 1, "HTTP 500")
    drain()
    assert len(receiver.requests) == 1


def test_redirects_are_not_followed(acme, receivers):
    target = receivers()
    redirecting = receivers(statuses=[302], headers={"Location": target.url})
    register(acme, redirecting.url)
    outbox.record([event(acme.tenant)])
    drain()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "pending" and delivery.last_status_code == 302
    assert len(redirecting.requests) == 1 and target.requests == []


def test_an_address_refused_at_send_time_is_not_called(acme, receivers, settings):
    receiver = receivers()
    register(acme, receiver.url)  # allowed when registered ...
    outbox.record([event(acme.tenant)])
    settings.CHAT_WEBHOOK_ALLOW_PRIVATE = False  # ... not any more when sent
    drain()
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "pending" and delivery.last_error.startswith("refused: ")
    assert receiver.requests == []


def test_concurrent_senders_send_each_delivery_once(acme, receivers):
    receiver = receivers()
    register(acme, receiver.url)
    outbox.record([event(acme.tenant) for _ in range(60)])
    senders = [Sender(threads=2, poll_seconds=0.05) for _ in range(3)]
    threads = [threading.Thread(target=s.run, kwargs={"once": True}) for s in senders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    drain()
    ids = [r["headers"]["Chatsvc-Event-Id"] for r in receiver.requests]
    assert len(ids) == 60 and len(set(ids)) == 60
    assert WebhookDelivery.objects.filter(status="delivered", attempts=1).count() == 60


def test_pending_deliveries_past_the_maximum_age_expire_unsent(acme, receivers, settings):
    settings.CHAT_WEBHOOK_MAX_AGE_SECONDS = 0
    receiver = receivers()
    register(acme, receiver.url)
    outbox.record([event(acme.tenant)])
    drain()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("failed", 0)
    assert delivery.last_error.startswith("expired")
    assert receiver.requests == []
