"""The worker's counts (record_batch) and the web processes' socket samples."""

import asyncio
import dataclasses
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chatsvc.messaging import runtime
from chatsvc.usage import recorder
from chatsvc.usage.models import UsageHour, UsageUser
from tests.usage.conftest import event, hours_ago, message, sockets


@pytest.fixture(autouse=True)
def _no_prune_unless_asked():
    """The hourly clean-up runs on a process's first batch; tests ask for it."""
    recorder._last_prune = time.monotonic()


def hour_row(tenant, moment) -> UsageHour:
    return UsageHour.objects.get(tenant=tenant, hour=recorder.hour_of(moment))


def users(tenant, span, moment) -> int:
    bucket = recorder.hour_of(moment) if span == UsageUser.HOUR else recorder.day_of(moment)
    return UsageUser.objects.filter(tenant=tenant, span=span, bucket=bucket).count()


@pytest.mark.django_db
def test_a_batch_counts_per_tenant_and_hour_of_each_messages_ts(acme, other):
    two, one = hours_ago(2), hours_ago(1)
    batch = [
        message(acme.id, "ada", two),
        message(acme.id, "bob", two + timedelta(minutes=20)),
        message(acme.id, "ada", two + timedelta(minutes=40)),
        message(acme.id, "ada", one),
        message(other.id, "zed", one),
        message(other.id, "zed", one),
    ]
    before = datetime.now(UTC)
    recorder.record_batch(batch, [event(acme.id, two), event(acme.id, two)], 1234)
    after = datetime.now(UTC)

    assert hour_row(acme, two).messages == 3 and hour_row(acme, two).content_events == 2
    assert hour_row(acme, one).messages == 1 and hour_row(acme, one).content_events == 0
    assert hour_row(other, one).messages == 2
    assert not UsageHour.objects.filter(tenant=other, hour=recorder.hour_of(two)).exists()
    # Distinct senders per hour and per day, never mixed between tenants.
    assert users(acme, UsageUser.HOUR, two) == 2
    assert users(acme, UsageUser.HOUR, one) == 1
    assert users(other, UsageUser.HOUR, one) == 1
    expected_day = len({("ada", recorder.day_of(two)), ("bob", recorder.day_of(two))})
    assert users(acme, UsageUser.DAY, two) == expected_day
    # Lag per tenant: send (ts) to stored, in the hour it was stored.
    lag = hour_row(acme, after).max_queue_lag_ms
    assert (before - two) // timedelta(milliseconds=1) <= lag
    assert lag <= (after - two) // timedelta(milliseconds=1)
    assert hour_row(other, after).max_queue_lag_ms <= (after - one) // timedelta(milliseconds=1)


@pytest.mark.django_db
def test_batches_add_up_and_users_stay_distinct(acme):
    moment = hours_ago(3)
    first = [message(acme.id, "ada", moment), message(acme.id, "bob", moment)]
    recorder.record_batch(first, [], 100)
    recorder.record_batch([message(acme.id, "ada", moment)], [event(acme.id, moment)], 50)
    row = hour_row(acme, moment)
    assert (row.messages, row.content_events) == (3, 1)
    assert users(acme, UsageUser.HOUR, moment) == 2

    # At least once: SQS delivering a counted batch again counts its messages again;
    # distinct users and the maxima are not affected.
    recorder.record_batch(first, [], 100)
    row.refresh_from_db()
    assert row.messages == 5
    assert users(acme, UsageUser.HOUR, moment) == 2


@pytest.mark.django_db
def test_a_batch_costs_two_statements(acme, other):
    batch = [message(t.id, f"user{i}", hours_ago(i % 3)) for i in range(50) for t in (acme,)]
    batch += [message(other.id, "zed", hours_ago(1))] * 3
    with CaptureQueriesContext(connection) as queries:
        recorder.record_batch(batch, [event(acme.id, hours_ago(0))], 10)
    statements = [
        q["sql"] for q in queries if not q["sql"].upper().startswith(("SAVEPOINT", "RELEASE"))
    ]
    assert len(statements) == 2, statements
    assert UsageHour.objects.filter(tenant=acme).count() == 3


@pytest.mark.django_db
def test_an_unknown_tenant_or_a_bad_ts_does_not_lose_the_batch(acme):
    moment = hours_ago(1)
    broken = message(acme.id, "ada", moment)
    broken = dataclasses.replace(broken, ts="nope")
    recorder.record_batch(
        [
            message("01ZZZZZZZZZZZZZZZZZZZZZZZZ", "ghost", moment),
            message(acme.id, "ada", moment),
            broken,
        ],
        [],
        777,
    )
    assert hour_row(acme, moment).messages == 1
    now_row = hour_row(acme, datetime.now(UTC))
    assert now_row.messages == 1  # the unparsable ts counts when it was stored
    assert now_row.max_queue_lag_ms >= 777  # ... with the batch's SQS age as its lag


@pytest.mark.django_db(transaction=True)
def test_a_database_failure_never_reaches_the_worker(acme, caplog):
    if connection.vendor != "postgresql":
        pytest.skip("a lost server connection; SQLite's in-memory test database would vanish")
    moment = hours_ago(1)
    connection.ensure_connection()
    connection.connection.close()  # the server went away behind Django's back
    with caplog.at_level(logging.WARNING, logger="chatsvc.usage.recorder"):
        assert recorder.record_batch([message(acme.id, "ada", moment)], [], 5) is None
    warnings = [r for r in caplog.records if r.name == "chatsvc.usage.recorder"]
    assert [r.getMessage() for r in warnings] == ["usage not recorded"]
    assert warnings[0].levelno == logging.WARNING and warnings[0].messages == 1

    # The broken connection was dropped: the next batch counts again.
    recorder.record_batch([message(acme.id, "ada", moment)], [], 5)
    assert hour_row(acme, moment).messages == 1


@pytest.mark.django_db
def test_old_rows_are_pruned(acme, settings):
    settings.CHAT_USAGE_RETENTION_DAYS = 10
    now = datetime.now(UTC)
    for days in (0, 5, 11):
        UsageHour.objects.create(tenant=acme, hour=recorder.hour_of(now - timedelta(days=days)))
    for span, days in (
        (UsageUser.HOUR, 1),
        (UsageUser.HOUR, 4),
        (UsageUser.DAY, 30),
        (UsageUser.DAY, 40),
    ):
        UsageUser.objects.create(
            tenant=acme,
            span=span,
            bucket=recorder.hour_of(now - timedelta(days=days)),
            user_key="k",
        )
    assert recorder.prune(now) == 3
    assert UsageHour.objects.count() == 2
    assert sorted(UsageUser.objects.values_list("span", flat=True)) == [
        UsageUser.HOUR,
        UsageUser.DAY,
    ]
    # A redelivery older than retention does not bring its hour back.
    recorder.record_batch([message(acme.id, "ada", now - timedelta(days=12))], [], 1)
    assert UsageHour.objects.filter(hour__lt=now - timedelta(days=10)).count() == 0


# --- live sockets ---------------------------------------------------------------------


def max_sockets(tenant) -> int:
    row = UsageHour.objects.filter(tenant=tenant, hour=recorder.hour_of(datetime.now(UTC))).first()
    return row.max_live_sockets if row else 0


@pytest.mark.django_db(transaction=True)
async def test_sockets_are_summed_over_live_processes_in_redis(
    acme, other, usage_redis, monkeypatch
):
    try:
        monkeypatch.setattr(recorder, "PROCESS_ID", "web-a")
        await recorder.sample_sockets(sockets(**{acme.id: 2}))
        assert (
            await database_sync_to_async(max_sockets)(acme) == 2
        )  # web-a records (it holds the lease)
        assert await database_sync_to_async(recorder.live_sockets)(acme.id) == 2

        monkeypatch.setattr(recorder, "PROCESS_ID", "web-b")
        await recorder.sample_sockets(sockets(**{acme.id: 3, other.id: 1}))
        assert usage_redis.hgetall(recorder.KEY_PREFIX + "web-b") == {
            acme.id.encode(): b"3",
            other.id.encode(): b"1",
        }
        assert 0 < usage_redis.ttl(recorder.KEY_PREFIX + "web-b") <= 90
        assert await database_sync_to_async(recorder.live_sockets)(acme.id) == 5
        assert await database_sync_to_async(recorder.live_sockets)(other.id) == 1
        assert await database_sync_to_async(max_sockets)(acme) == 2  # web-b did not record

        usage_redis.delete(recorder.RECORDER_KEY)  # the next interval: whoever samples records
        monkeypatch.setattr(recorder, "PROCESS_ID", "web-a")
        await recorder.sample_sockets(sockets(**{acme.id: 1}))
        assert (
            await database_sync_to_async(max_sockets)(acme) == 4
        )  # 1 + 3: the sum, not one process
        assert await database_sync_to_async(max_sockets)(other) == 1

        # web-b stopped sampling (it died): after 3 sweeps it no longer counts.
        usage_redis.zadd(recorder.PROCESSES_KEY, {"web-b": 1})
        assert await database_sync_to_async(recorder.live_sockets)(acme.id) == 1
        usage_redis.delete(recorder.RECORDER_KEY)
        await recorder.sample_sockets(sockets(**{acme.id: 1}))
        assert usage_redis.zrange(recorder.PROCESSES_KEY, 0, -1) == [b"web-a"]
        assert await database_sync_to_async(max_sockets)(acme) == 4  # the hour's maximum stays
    finally:
        await runtime.shutdown()


@pytest.mark.django_db(transaction=True)
async def test_sockets_in_process_without_redis(acme, other, no_redis):
    await recorder.sample_sockets(sockets(**{acme.id: 3}))
    assert recorder.live_sockets(acme.id) == 3
    assert recorder.live_sockets(other.id) == 0
    assert await database_sync_to_async(max_sockets)(acme) == 3
    await recorder.sample_sockets(sockets(**{acme.id: 1}))
    assert recorder.live_sockets(acme.id) == 1
    assert await database_sync_to_async(max_sockets)(acme) == 3
    assert await database_sync_to_async(UsageHour.objects.filter(tenant=other).exists)() is False


@pytest.mark.django_db(transaction=True)
async def test_sampling_never_raises_when_redis_is_down(acme, settings, caplog):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    try:
        with caplog.at_level(logging.WARNING, logger="chatsvc.usage.recorder"):
            await asyncio.wait_for(recorder.sample_sockets(sockets(**{acme.id: 1})), 10)
        assert "live sockets not sampled" in [r.getMessage() for r in caplog.records]
        assert recorder.live_sockets(acme.id) is None  # the page says "unknown"
    finally:
        await runtime.shutdown()


@pytest.mark.django_db
def test_deleting_a_tenant_deletes_its_usage(acme, other):
    moment = hours_ago(1)
    recorder.record_batch([message(acme.id, "ada", moment), message(other.id, "zed", moment)])
    acme.delete()
    assert set(UsageHour.objects.values_list("tenant_id", flat=True)) == {other.id}
    assert set(UsageUser.objects.values_list("tenant_id", flat=True)) == {other.id}
