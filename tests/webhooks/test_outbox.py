"""Recording events: one delivery per subscribed, enabled endpoint; idempotent; cheap."""

import json

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from chatsvc.rooms.services import close_room
from chatsvc.webhooks import outbox, services
from chatsvc.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests import factories
from tests.webhooks.conftest import event

pytestmark = pytest.mark.django_db


def endpoint(tenant, url="http://127.0.0.1:9/hook", **fields):
    return services.create_endpoint(tenant=tenant.tenant, url=url, **fields).endpoint


def test_recording_twice_makes_one_delivery_per_endpoint(acme):
    first = endpoint(acme)
    second = endpoint(acme, url="http://127.0.0.1:9/other")
    created = event(acme.tenant, connection_id="01JD7X3K9Q4W6E2R8T5Y1V3N0P")
    outbox.record([created])
    outbox.record([created])  # the SQS worker is at least once
    outbox.record([dict(created, data={"changed": True})])  # same id: still the first
    rows = WebhookDelivery.objects.order_by("endpoint_id")
    assert {row.endpoint_id for row in rows} == {first.id, second.id}
    assert rows.count() == 2
    for row in rows:
        assert row.event_id == created["id"] and row.event_type == "message.created"
        assert row.connection_id == "01JD7X3K9Q4W6E2R8T5Y1V3N0P"
        assert row.status == "pending" and row.attempts == 0
        assert json.loads(row.payload) == {
            "id": created["id"],
            "type": "message.created",
            "created_at": "2026-11-26T10:00:01.123Z",
            "tenant_id": acme.tenant.id,
            "connection_id": "01JD7X3K9Q4W6E2R8T5Y1V3N0P",
            "data": created["data"],
        }


def test_only_subscribed_enabled_endpoints_of_the_tenant_get_the_event(acme, other):
    messages_only = endpoint(acme, event_types=["message.created"])
    closes_only = endpoint(acme, event_types=["room.closed"])
    everything = endpoint(acme)
    disabled = endpoint(acme)
    services.update_endpoint(endpoint=disabled, is_enabled=False)
    foreign = endpoint(other)
    outbox.record([event(acme.tenant), event(acme.tenant, outbox.ROOM_CLOSED)])
    got = {(d.endpoint_id, d.event_type) for d in WebhookDelivery.objects.all()}
    assert got == {
        (messages_only.id, "message.created"),
        (closes_only.id, "room.closed"),
        (everything.id, "message.created"),
        (everything.id, "room.closed"),
    }
    assert not WebhookDelivery.objects.filter(endpoint__in=[disabled, foreign]).exists()


def test_a_malformed_event_records_nothing(acme):
    endpoint(acme)
    with pytest.raises(ValueError, match="unknown webhook event type"):
        outbox.record([event(acme.tenant), event(acme.tenant, "message.exploded")])
    with pytest.raises(ValueError, match="lacks"):
        outbox.record([{"id": "x", "type": "room.closed"}])
    assert not WebhookDelivery.objects.exists()


def test_tenants_without_endpoints_cost_one_query_then_none(acme, other, django_assert_num_queries):
    events = [event(acme.tenant), event(other.tenant), event(acme.tenant)]
    with django_assert_num_queries(1):  # both tenants' endpoints in one query
        assert outbox.record(events) == 0
    with django_assert_num_queries(0):  # cached
        assert outbox.record(events) == 0
    endpoint(acme)  # a change in this process clears the cache at once
    assert outbox.record(events) == 2


@pytest.mark.django_db(transaction=True)
async def test_arecord_records_from_async_code(acme):
    made = await sync_to_async(endpoint)(acme)
    assert await outbox.arecord([event(acme.tenant)]) == 1
    assert await WebhookDelivery.objects.filter(endpoint_id=made.id).acount() == 1
    await sync_to_async(lambda: connection.close())()  # the ORM thread: no session left


def test_closing_a_room_records_room_closed_once(acme):
    made = endpoint(acme, event_types=["room.closed"])
    room = factories.room_for(acme, title="Algebra")
    close_room(room=room)
    close_room(room=room)  # closing twice is harmless: one event
    (delivery,) = WebhookDelivery.objects.filter(endpoint=made)
    body = json.loads(delivery.payload)
    assert body["type"] == "room.closed" and delivery.event_type == "room.closed"
    assert body["connection_id"] == room.connection_id == delivery.connection_id
    assert body["tenant_id"] == acme.tenant.id
    assert body["data"]["title"] == "Algebra"
    assert body["data"]["closed_at"] == body["created_at"]
    assert body["created_at"].endswith("Z")
    room.refresh_from_db()
    assert room.status == "closed"


def test_a_room_close_that_rolls_back_records_nothing(acme):
    from django.db import transaction

    endpoint(acme)
    room = factories.room_for(acme)
    with pytest.raises(RuntimeError), transaction.atomic():
        close_room(room=room)
        assert WebhookDelivery.objects.count() == 1
        raise RuntimeError
    assert not WebhookDelivery.objects.exists()
    room.refresh_from_db()
    assert room.status == "open"


def test_the_secret_is_stored_encrypted(acme):
    created = services.create_endpoint(tenant=acme.tenant, url="http://127.0.0.1:9/h")
    stored = WebhookEndpoint.objects.get(pk=created.endpoint.pk)
    assert created.secret.startswith("whsec_")
    assert created.secret not in stored.secret_encrypted
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret_encrypted FROM webhooks_webhookendpoint")
        assert created.secret not in cursor.fetchone()[0]
    assert services.secrets_of(stored) == [created.secret]
