"""`manage.py deliver_webhooks --once` as a real process, on the test database."""

import os
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from django.db import connection

from chatsvc.webhooks import outbox, services
from chatsvc.webhooks.models import WebhookDelivery
from tests.webhooks.conftest import event

pytestmark = pytest.mark.django_db(transaction=True)


def database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    password = f":{db['PASSWORD']}" if db["PASSWORD"] else ""
    return (
        f"postgres://{db['USER']}{password}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
        f"/{db['NAME']}"
    )


def test_deliver_webhooks_once_delivers_to_a_receiver(acme, receivers):
    if connection.vendor == "sqlite" and connection.settings_dict["NAME"].startswith("file:"):
        pytest.skip("an in-memory SQLite test database is not reachable from another process")
    receiver = receivers()
    created = services.create_endpoint(tenant=acme.tenant, url=receiver.url)
    sent = event(acme.tenant, outbox.ROOM_CLOSED)
    outbox.record([sent])
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "CHAT_WEBHOOK_ALLOW_PRIVATE": "true",
        "SECRET_KEY": django_settings.SECRET_KEY,
    }
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "deliver_webhooks", "--once"],
        cwd=django_settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "sent 1, delivered 1" in result.stdout
    (request,) = receiver.wait_for(1)
    assert request["headers"]["Chatsvc-Event-Id"] == sent["id"]
    assert request["headers"]["Chatsvc-Event-Type"] == "room.closed"
    assert request["headers"]["Chatsvc-Signature"].startswith("t=")
    delivery = WebhookDelivery.objects.get(endpoint=created.endpoint)
    assert delivery.status == "delivered" and delivery.attempts == 1
