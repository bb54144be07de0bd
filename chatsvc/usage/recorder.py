"""Counting usage where it happens: the worker's stored batches and the web
processes' live sockets. Nothing here may ever raise into its caller.

* `record_batch` (the worker, once per stored batch, in its poller thread):
  two SQL statements, whatever the batch — one INSERT ... ON CONFLICT DO
  NOTHING of the senders into `UsageUser` (per hour and per day, so distinct
  users are exact at read time for both periods), one upsert of the per-hour
  counters into `UsageHour` (`messages = old + new`, lag = the larger). Counts
  are **at least once**: a batch SQS delivers again after it was counted (a
  failed delete, a batch that outlived the visibility timeout) is counted
  again. Such redeliveries are rare (the worker's `max_receive_count` and
  `delete_failed`), and exact counts would need a row per message. Distinct
  users and the maxima are exact whatever the redeliveries.
* `sample_sockets` (every web process's revalidation sweep): its sockets per
  tenant into a Redis hash of its own that expires after 3 sweeps (a process
  that died stops counting). Once per sweep interval one process (whichever
  samples first takes a short Redis lease) sums the live processes' hashes
  and raises the hour's `max_live_sockets` to the sum: the tenant's maximum,
  not one process's, for one HGETALL per process and one upsert per interval
  fleet-wide. In-process without Redis (one web process).
"""

import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection, transaction

from chatsvc.messaging.queue_message import QueueEvent, QueueMessage, parse_timestamp
from chatsvc.usage.models import UsageHour, UsageUser

logger = logging.getLogger(__name__)

STALE_AFTER_SWEEPS = 3
# Hourly user rows serve the 48-hour view, daily ones the 30-day view.
HOURLY_USERS_KEPT = timedelta(days=3)
DAILY_USERS_KEPT = timedelta(days=32)
PRUNE_EVERY_SECONDS = 3600
ROWS_PER_STATEMENT = 500

# Hash-tagged: every usage key lives on one shard, so a cluster runs the
# sampling pipeline as one transaction.
KEY_PREFIX = "chatsvc:usage:{sockets}:"
PROCESSES_KEY = KEY_PREFIX + "processes"  # ZSET process id -> expiry (epoch ms)
# Held for most of a sweep interval by the process that records the totals.
RECORDER_KEY = KEY_PREFIX + "recorder"

# PIDs repeat across containers (often 1): the host name and a random part too.
PROCESS_ID = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


def hour_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_of(moment: datetime) -> datetime:
    return hour_of(moment).replace(hour=0)


def user_key(tenant_id: str, user_id: str) -> str:
    return hashlib.sha256(f"{tenant_id}\0{user_id}".encode()).hexdigest()[:32]


def _stale_seconds() -> float:
    return STALE_AFTER_SWEEPS * settings.CHAT_REVALIDATE_SECONDS


# --- SQL -------------------------------------------------------------------------------


@dataclass
class _Hour:
    messages: int = 0
    content_events: int = 0
    max_live_sockets: int = 0
    max_queue_lag_ms: int = 0


def _greatest() -> str:
    # PostgreSQL's GREATEST; SQLite's scalar MAX with two arguments.
    return "MAX" if connection.vendor == "sqlite" else "GREATEST"


def _chunks(rows: list, size: int = ROWS_PER_STATEMENT):
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def upsert_hours(hours: dict[tuple[str, datetime], _Hour]) -> None:
    """Add the counters and raise the maxima of (tenant id, hour) rows: one statement.

    Rows go in (tenant, hour) order, so concurrent upserts lock them in the
    same order and cannot deadlock.
    """
    if not hours:
        return
    quote = connection.ops.quote_name
    table = quote(UsageHour._meta.db_table)
    greatest = _greatest()
    adapt = connection.ops.adapt_datetimefield_value
    rows = sorted(hours.items())
    for chunk in _chunks(rows):
        params = []
        for (tenant_id, hour), counts in chunk:
            params += [
                tenant_id,
                adapt(hour),
                counts.messages,
                counts.content_events,
                counts.max_live_sockets,
                counts.max_queue_lag_ms,
            ]
        values = ", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(chunk))
        sql = (
            f"INSERT INTO {table} (tenant_id, hour, messages, content_events, "  # noqa: S608 - names are ours
            f"max_live_sockets, max_queue_lag_ms) VALUES {values} "
            f"ON CONFLICT (tenant_id, hour) DO UPDATE SET "
            f"messages = {table}.messages + EXCLUDED.messages, "
            f"content_events = {table}.content_events + EXCLUDED.content_events, "
            f"max_live_sockets = {greatest}({table}.max_live_sockets, EXCLUDED.max_live_sockets), "
            f"max_queue_lag_ms = {greatest}({table}.max_queue_lag_ms, EXCLUDED.max_queue_lag_ms)"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


def insert_users(users: set[tuple[str, int, datetime, str]]) -> None:
    """(tenant id, span, bucket, user key) rows, existing ones left alone: one statement."""
    if not users:
        return
    table = connection.ops.quote_name(UsageUser._meta.db_table)
    adapt = connection.ops.adapt_datetimefield_value
    for chunk in _chunks(sorted(users)):
        params = []
        for tenant_id, span, bucket, key in chunk:
            params += [tenant_id, span, adapt(bucket), key]
        values = ", ".join(["(%s, %s, %s, %s)"] * len(chunk))
        sql = (
            f"INSERT INTO {table} (tenant_id, span, bucket, user_key) VALUES {values} "  # noqa: S608
            "ON CONFLICT (tenant_id, span, bucket, user_key) DO NOTHING"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


# --- the worker --------------------------------------------------------------------------

_last_prune = 0.0
_prune_lock = threading.Lock()


def _parsed(ts: object) -> datetime | None:
    try:
        return parse_timestamp(ts)  # type: ignore[arg-type]
    except (TypeError, ValueError, AttributeError):
        return None


def counts_of(
    messages: Iterable[QueueMessage],
    events: Iterable[QueueEvent],
    oldest_age_ms: int | None,
    *,
    now: datetime,
) -> tuple[dict[tuple[str, datetime], _Hour], set[tuple[str, int, datetime, str]]]:
    """The rows one batch adds: per (tenant, hour of the item's ts), and the senders.

    Persistence lag is per tenant: now minus the `ts` of its oldest item in
    the batch (send to stored), in the hour it was stored. A batch's
    `oldest_age_ms` (SQS only, and the whole batch's) stands in for an item
    whose `ts` does not parse.
    """
    retained_from = now - timedelta(days=settings.CHAT_USAGE_RETENTION_DAYS)
    this_hour = hour_of(now)
    hours: dict[tuple[str, datetime], _Hour] = defaultdict(_Hour)
    users: set[tuple[str, int, datetime, str]] = set()
    lag: dict[str, int] = {}

    def item(tenant_id: str, ts: object) -> datetime:
        moment = _parsed(ts)
        if moment is None:
            age = oldest_age_ms or 0
            moment = now
        else:
            age = (now - moment) // timedelta(milliseconds=1)
        lag[tenant_id] = max(lag.get(tenant_id, 0), age, 0)
        return moment

    for message in messages:
        moment = item(message.tenant_id, message.ts)
        if moment < retained_from:
            continue  # a very late redelivery: its hour is gone already
        hours[(message.tenant_id, hour_of(moment))].messages += 1
        key = user_key(message.tenant_id, message.sender_id)
        users.add((message.tenant_id, UsageUser.HOUR, hour_of(moment), key))
        users.add((message.tenant_id, UsageUser.DAY, day_of(moment), key))
    for event in events:
        moment = item(event.tenant_id, event.event.get("ts"))
        if moment >= retained_from:
            hours[(event.tenant_id, hour_of(moment))].content_events += 1
    for tenant_id, age in lag.items():
        row = hours[(tenant_id, this_hour)]
        row.max_queue_lag_ms = max(row.max_queue_lag_ms, age)
    return dict(hours), users


def record_batch(
    messages: Iterable[QueueMessage],
    events: Iterable[QueueEvent] = (),
    oldest_age_ms: int | None = None,
) -> None:
    """Count a batch the worker has stored. Never raises: a failure logs one WARNING."""
    try:
        messages, events = list(messages), list(events)
        if not messages and not events:
            return
        hours, users = counts_of(messages, events, oldest_age_ms, now=datetime.now(UTC))
        with transaction.atomic():  # all of a batch or none of it
            insert_users(users)
            upsert_hours(hours)
    except Exception as exc:
        logger.warning(
            "usage not recorded",
            extra={
                "messages": len(messages) if isinstance(messages, list) else None,
                "events": len(events) if isinstance(events, list) else None,
                "error": f"{type(exc).__name__}: {exc}"[:300],
            },
        )
        _reset_connection()
        return
    _maybe_prune()


def _reset_connection() -> None:
    """Drop this thread's connection after a failure: the next batch connects afresh
    (a connection the server closed would otherwise fail every batch after it)."""
    try:
        if not connection.in_atomic_block:
            connection.close()
    except Exception:  # noqa: S110 - best effort; the next batch logs its own failure
        pass


def _maybe_prune() -> None:
    global _last_prune
    with _prune_lock:
        if _last_prune and time.monotonic() - _last_prune < PRUNE_EVERY_SECONDS:
            return
        _last_prune = time.monotonic()
    try:
        prune()
    except Exception as exc:
        logger.warning("usage clean-up failed", extra={"error": f"{type(exc).__name__}: {exc}"})


def prune(now: datetime | None = None) -> int:
    """Delete what is past retention; the number of rows deleted."""
    now = now or datetime.now(UTC)
    kept = timedelta(days=settings.CHAT_USAGE_RETENTION_DAYS)
    deleted, _ = UsageHour.objects.filter(hour__lt=hour_of(now - kept)).delete()
    for span, keep in ((UsageUser.HOUR, HOURLY_USERS_KEPT), (UsageUser.DAY, DAILY_USERS_KEPT)):
        removed, _ = UsageUser.objects.filter(span=span, bucket__lt=hour_of(now - keep)).delete()
        deleted += removed
    return deleted


# --- live sockets ------------------------------------------------------------------------

# Without Redis (one web process): its latest sample and when it was taken.
_local_sample: tuple[dict[str, int], float] = ({}, 0.0)


def socket_counts(sockets) -> dict[str, int]:
    """Authenticated, open sockets per tenant id."""
    return dict(
        Counter(
            s.user.tenant.id
            for s in sockets
            if getattr(s, "user", None) is not None and not getattr(s, "closed", False)
        )
    )


def _process_key(process_id: str) -> str:
    return KEY_PREFIX + process_id


async def _publish(redis, counts: dict[str, int]) -> dict[str, int] | None:
    """Write this process's counts. Once per sweep interval one process (the first to
    ask) gets the totals over every live process to record; the others get None."""
    now_ms = int(time.time() * 1000)
    ttl = max(1, round(_stale_seconds()))
    key = _process_key(PROCESS_ID)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(key)
        if counts:
            pipe.hset(key, mapping=counts)
            pipe.expire(key, ttl)
        pipe.zadd(PROCESSES_KEY, {PROCESS_ID: now_ms + ttl * 1000})
        pipe.zremrangebyscore(PROCESSES_KEY, "-inf", now_ms)
        pipe.expire(PROCESSES_KEY, ttl * 2)
        interval_ms = max(1, int(settings.CHAT_REVALIDATE_SECONDS * 1000 * 0.9))
        pipe.set(RECORDER_KEY, PROCESS_ID, nx=True, px=interval_ms)
        pipe.zrange(PROCESSES_KEY, 0, -1)
        *_, recorder, processes = await pipe.execute()
    if not recorder:
        return None
    async with redis.pipeline(transaction=False) as pipe:
        for process in processes:
            pipe.hgetall(_process_key(_text(process)))
        hashes = await pipe.execute()
    totals: Counter = Counter()
    for mapping in hashes:
        for tenant_id, n in mapping.items():
            totals[_text(tenant_id)] += int(n)
    return dict(totals)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _record_max_sockets(totals: dict[str, int], hour: datetime) -> None:
    upsert_hours(
        {(tenant_id, hour): _Hour(max_live_sockets=n) for tenant_id, n in totals.items() if n}
    )


async def sample_sockets(sockets) -> None:
    """This web process's live sockets, per tenant (every revalidation sweep). Never raises."""
    global _local_sample
    try:
        counts = socket_counts(sockets)
        if settings.REDIS_URL:
            from chatsvc.messaging import runtime

            totals = await _publish(runtime.room_stream().redis, counts)
        else:
            _local_sample = (counts, time.time())
            totals = counts
        if totals:
            await database_sync_to_async(_record_max_sockets)(totals, hour_of(datetime.now(UTC)))
    except Exception as exc:
        logger.warning(
            "live sockets not sampled", extra={"error": f"{type(exc).__name__}: {exc}"[:300]}
        )


@cache
def _blocking_redis(url: str):
    import redis

    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


def live_sockets(tenant_id: str) -> int | None:
    """A tenant's sockets now, over every live web process (None: Redis unreachable).

    Synchronous, for the admin. "Now" is the processes' latest samples: up to
    one sweep old.
    """
    if not settings.REDIS_URL:
        counts, sampled_at = _local_sample
        if time.time() - sampled_at > _stale_seconds():
            return 0
        return counts.get(tenant_id, 0)
    try:
        client = _blocking_redis(settings.REDIS_URL)
        processes = client.zrangebyscore(PROCESSES_KEY, int(time.time() * 1000), "+inf")
        if not processes:
            return 0
        with client.pipeline(transaction=False) as pipe:
            for process in processes:
                pipe.hget(_process_key(_text(process)), tenant_id)
            values = pipe.execute()
    except Exception as exc:
        logger.warning("live sockets unknown", extra={"error": f"{type(exc).__name__}: {exc}"})
        return None
    return sum(int(v) for v in values if v is not None)
