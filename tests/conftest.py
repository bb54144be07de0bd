"""Shared fixtures: real services (Redis, PostgreSQL, moto server over HTTP).

With CHATSVC_REQUIRE_SERVICES=1 (as .ci/run sets it) a missing service fails
the test instead of skipping it.
"""

import os
import socket
import uuid
from types import SimpleNamespace

import pytest

REQUIRE_SERVICES = os.environ.get("CHATSVC_REQUIRE_SERVICES") == "1"


def service_missing(reason: str):
    """Fail when services are required (CI), skip otherwise."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if not url:
        service_missing("REDIS_URL is not set")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        service_missing(f"Redis at {url} is unreachable: {exc}")
    return url


@pytest.fixture(scope="session")
def moto_endpoint() -> str:
    """moto in server mode, over real HTTP on loopback, for the whole session."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint, settings):
    """A freshly provisioned queue, DLQ and table on the moto server."""
    from chatsvc.aws import clients, provision

    settings.AWS_ENDPOINT_URL = moto_endpoint
    settings.AWS_REGION = "us-east-1"
    name = f"chat-{uuid.uuid4().hex[:10]}"
    queue_url, dlq_url = provision.ensure_queue(clients.sqs(), name)
    provision.ensure_table(clients.dynamodb(), name)
    settings.CHAT_QUEUE_URL = queue_url
    settings.CHAT_TABLE_NAME = name
    return SimpleNamespace(endpoint=moto_endpoint, queue_url=queue_url, dlq_url=dlq_url, table=name)


@pytest.fixture
def bucket(moto_endpoint, settings):
    """(Attachments) A fresh bucket on the moto server; the attachments storage pointed at it."""
    from chatsvc.aws import clients, provision

    settings.AWS_ENDPOINT_URL = moto_endpoint
    settings.AWS_REGION = "us-east-1"
    name = f"attachments-{uuid.uuid4().hex[:10]}"
    s3 = clients.client("s3")
    provision.ensure_bucket(s3, name, cors_origins=["http://127.0.0.1:8000"])
    settings.CHAT_ATTACHMENTS_BUCKET = name
    attachments = settings.STORAGES["attachments"]
    settings.STORAGES = {
        **settings.STORAGES,
        "attachments": {
            **attachments,
            "OPTIONS": {
                **attachments["OPTIONS"],
                "bucket_name": name,
                "endpoint_url": moto_endpoint,
                "region_name": "us-east-1",
            },
        },
    }
    return SimpleNamespace(name=name, s3=s3, endpoint=moto_endpoint)


@pytest.fixture(scope="module")
def orm_beside_playwright():
    """Playwright's sync API keeps an event loop in this thread, which Django's ORM
    takes for an async context; the test's own queries never run inside it."""
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE")
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    """Production serves hashed names from collectstatic's manifest; tests don't collect."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def _fresh_directory():
    """Each test's database is its own: nothing cached by an earlier test applies."""
    from chatsvc.realtime.directory import directory

    directory().clear()
