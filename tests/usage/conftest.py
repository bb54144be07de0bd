"""Usage tests: real PostgreSQL (DATABASE_URL) and Redis (REDIS_URL) when set."""

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import User

from chatsvc.core.ulid import new_ulid
from chatsvc.messaging.queue_message import QueueEvent, QueueMessage, utc_timestamp
from chatsvc.usage import recorder
from tests import factories


def message(tenant_id: str, sender: str, moment: datetime, **fields) -> QueueMessage:
    """A queue message as the web tier writes it (through its JSON contract)."""
    made = QueueMessage(
        id=new_ulid(),
        tenant_id=tenant_id,
        connection_id=fields.pop("connection_id", new_ulid()),
        sender_id=sender,
        sender_name=sender.title(),
        body=fields.pop("body", "hello"),
        ts=utc_timestamp(moment),
        seq=fields.pop("seq", 1),
    )
    return QueueMessage.from_json(made.to_json())


def event(tenant_id: str, moment: datetime, type_: str = "reaction") -> QueueEvent:
    frame = {
        "type": type_,
        "connection_id": new_ulid(),
        "id": new_ulid(),
        "seq": 2,
        "ts": utc_timestamp(moment),
        "message_id": new_ulid(),
    }
    return QueueEvent(tenant_id, frame, {})


def sockets(**per_tenant) -> list:
    """Stand-ins for ChatConsumers: `.user.tenant.id`, `.closed`; some unauthenticated."""
    made = []
    for tenant_id, count in per_tenant.items():
        tenant = SimpleNamespace(id=tenant_id)
        made += [
            SimpleNamespace(user=SimpleNamespace(tenant=tenant, id=f"u{i}"), closed=False)
            for i in range(count)
        ]
    made.append(SimpleNamespace(user=None, closed=False))  # not authenticated yet
    return made


def hours_ago(hours: int, minute: int = 10) -> datetime:
    """A moment `hours` whole hours before this one, `minute` minutes into its hour."""
    return recorder.hour_of(datetime.now(UTC)) - timedelta(hours=hours) + timedelta(minutes=minute)


@pytest.fixture
def acme(db):
    return factories.tenant_with_key("acme").tenant


@pytest.fixture
def other(db):
    return factories.tenant_with_key("other").tenant


@pytest.fixture
def usage_redis(settings):
    """Redis with no usage keys, before and after (the tests' own REDIS_URL index)."""
    if not settings.REDIS_URL:
        pytest.skip("REDIS_URL is not set")
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)

    def clean():
        keys = list(client.scan_iter(match="chatsvc:usage:*"))
        if keys:
            client.delete(*keys)

    clean()
    yield client
    clean()
    client.close()


@pytest.fixture
def no_redis(settings):
    """Local mode: no REDIS_URL, the in-process store."""
    settings.REDIS_URL = ""
    recorder._local_sample = ({}, 0.0)
    yield
    recorder._local_sample = ({}, 0.0)


@pytest.fixture
def admin_client(client, db):
    user = User.objects.create_superuser("root", "root@example.com", "pw-unused-123")
    client.force_login(user)
    return client
