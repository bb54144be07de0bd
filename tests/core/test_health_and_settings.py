"""Load balancer probes, production start-up guards and `check --deploy`."""

import json
import os
import subprocess
import sys

import pytest
from channels.testing import HttpCommunicator
from django.core.exceptions import ImproperlyConfigured

from chatsvc.asgi import application
from chatsvc.core.startup import assert_safe_for_production
from chatsvc.core.ulid import is_ulid, new_ulid, ulid_time_ms
from chatsvc.settings import BASE_DIR


async def probe(path, host=b"10.0.3.17:8000"):
    communicator = HttpCommunicator(application, "GET", path, headers=[(b"host", host)])
    response = await communicator.get_response(timeout=10)
    return response["status"], json.loads(response["body"])


async def test_healthz_answers_any_host_without_dependencies():
    assert await probe("/healthz") == (200, {"status": "ok"})


@pytest.fixture
def fresh_readiness(monkeypatch):
    from chatsvc.core import health

    monkeypatch.setattr(health, "_last", {})
    return health


@pytest.mark.django_db(transaction=True)
async def test_readyz_checks_database_redis_and_sqs(aws, settings, fresh_readiness):
    assert await probe("/readyz") == (200, {"status": "ok"})


@pytest.mark.django_db(transaction=True)
async def test_readyz_is_503_and_says_nothing_about_why(aws, settings, fresh_readiness, caplog):
    """Anyone can call it: hosts, ports and error text go to the log only."""
    settings.REDIS_URL = "redis://127.0.0.1:9/0"
    assert await probe("/readyz") == (503, {"status": "unavailable"})
    [record] = [r for r in caplog.records if r.getMessage() == "not ready"]
    assert set(record.failing) == {"redis"} and "127.0.0.1:9" in record.failing["redis"]


@pytest.mark.django_db(transaction=True)
async def test_readyz_is_503_when_sqs_is_unreachable(aws, settings, fresh_readiness, caplog):
    settings.CHAT_QUEUE_URL = aws.queue_url + "-gone"
    assert await probe("/readyz") == (503, {"status": "unavailable"})
    [record] = [r for r in caplog.records if r.getMessage() == "not ready"]
    assert set(record.failing) == {"sqs"}


@pytest.mark.django_db(transaction=True)
async def test_readyz_checks_at_most_once_per_cache_period(aws, fresh_readiness, monkeypatch):
    calls = []
    real = fresh_readiness._check_sqs

    async def counted():
        calls.append(1)
        await real()

    monkeypatch.setattr(fresh_readiness, "_check_sqs", counted)
    for _ in range(20):
        assert (await probe("/readyz"))[0] == 200
    assert len(calls) == 1


def test_production_refuses_insecure_defaults(settings):
    settings.DEBUG = False
    settings.SECRET_KEY = settings.INSECURE_SECRET_KEY
    with pytest.raises(ImproperlyConfigured, match="SECRET_KEY"):
        assert_safe_for_production()
    settings.SECRET_KEY = "s" * 60
    settings.ALLOWED_HOSTS = ["*"]
    with pytest.raises(ImproperlyConfigured, match="ALLOWED_HOSTS"):
        assert_safe_for_production()
    settings.ALLOWED_HOSTS = ["chat.example.edu"]
    settings.CHAT_QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/chat"
    settings.CHAT_WEBHOOK_ALLOW_PRIVATE = True  # webhooks into the VPC: SSRF
    with pytest.raises(ImproperlyConfigured, match="CHAT_WEBHOOK_ALLOW_PRIVATE"):
        assert_safe_for_production()
    settings.CHAT_WEBHOOK_ALLOW_PRIVATE = False
    assert_safe_for_production()


@pytest.mark.parametrize("command", [["check", "--deploy"], ["consume_queue", "--once"]])
def test_check_deploy_and_the_worker_refuse_the_development_key(command):
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": "insecure-local-development-key-never-use-in-production",
        "ALLOWED_HOSTS": "chat.example.edu",
        "CHAT_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/chat",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "SECRET_KEY must be set to a random value" in result.stdout + result.stderr


def test_check_deploy_is_clean_with_production_settings():
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": "p" * 30 + "Q9x!" * 10,
        "ALLOWED_HOSTS": "chat.example.edu",
        "CHAT_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/chat",
    }
    env.pop("SECURE_SSL_REDIRECT", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_ulids_are_ordered_and_carry_their_time():
    ids = [new_ulid() for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(is_ulid(i) for i in ids)
    assert abs(ulid_time_ms(ids[-1]) - ulid_time_ms(ids[0])) < 5000
    assert not is_ulid("I" * 26) and not is_ulid("8" + "0" * 25)


@pytest.mark.django_db
def test_models_and_migrations_agree():
    from django.core.management import call_command

    call_command("makemigrations", "--check", "--dry-run", verbosity=0)  # exits non-zero if not
