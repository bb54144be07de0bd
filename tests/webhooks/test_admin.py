"""The admin: secret shown once, replay and re-enable actions, filtered deliveries."""

import pytest
from django.contrib.auth.models import User

from chatsvc.webhooks import outbox, services
from chatsvc.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.webhooks.conftest import event

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(client):
    user = User.objects.create_superuser("root", "root@example.com", "pw-unused-123")
    client.force_login(user)
    return client


def test_adding_shows_the_secret_once_and_never_again(admin_client, acme):
    response = admin_client.post(
        "/admin/webhooks/webhookendpoint/add/",
        {
            "tenant": acme.tenant.pk,
            "url": "http://127.0.0.1:9/hook",
            "event_types": ["room.closed"],
            "description": "ops",
            "is_enabled": "on",
        },
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    endpoint = WebhookEndpoint.objects.get()
    (secret,) = services.secrets_of(endpoint)
    assert secret in response.content.decode()
    assert endpoint.event_types == ["room.closed"]
    for page in (
        "/admin/webhooks/webhookendpoint/",
        f"/admin/webhooks/webhookendpoint/{endpoint.pk}/change/",
    ):
        shown = admin_client.get(page)
        assert shown.status_code == 200
        assert secret not in shown.content.decode()
        assert endpoint.secret_encrypted not in shown.content.decode()


def test_a_private_url_is_refused_in_the_admin(admin_client, acme, settings):
    settings.CHAT_WEBHOOK_ALLOW_PRIVATE = False
    response = admin_client.post(
        "/admin/webhooks/webhookendpoint/add/",
        {"tenant": acme.tenant.pk, "url": "https://169.254.169.254/", "is_enabled": "on"},
    )
    assert response.status_code == 200
    assert "non-public address" in response.content.decode()
    assert not WebhookEndpoint.objects.exists()


def test_replay_and_re_enable_actions(admin_client, acme):
    created = services.create_endpoint(tenant=acme.tenant, url="http://127.0.0.1:9/hook")
    outbox.record([event(acme.tenant)])
    delivery = WebhookDelivery.objects.get()
    WebhookDelivery.objects.update(status="failed", attempts=30, last_error="HTTP 500")
    WebhookEndpoint.objects.update(is_enabled=False, consecutive_failures=30)

    listed = admin_client.get(
        f"/admin/webhooks/webhookdelivery/?endpoint__id__exact={created.endpoint.pk}&status=failed"
    )
    assert listed.status_code == 200 and delivery.pk in listed.content.decode()

    admin_client.post(
        "/admin/webhooks/webhookdelivery/",
        {"action": "replay", "_selected_action": [delivery.pk]},
    )
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.claimed_until is None

    admin_client.post(
        "/admin/webhooks/webhookendpoint/",
        {"action": "reenable", "_selected_action": [created.endpoint.pk]},
    )
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.is_enabled and endpoint.consecutive_failures == 0
