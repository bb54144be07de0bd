"""Load balancer probes, answered before Django's host validation.

ALB health checks address the task by IP, which ALLOWED_HOSTS cannot list;
these two paths carry no data worth protecting, so they bypass it.
/healthz: the process is alive (no dependencies). /readyz: database, Redis
and SQS are reachable. Anyone can call them, so /readyz answers with a status
only (what failed, and why, goes to the log), and its checks run at most once
per READY_CACHE_SECONDS per process, however often it is called.
"""

import asyncio
import json
import logging
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection

from chatsvc.aws import clients

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 3
READY_CACHE_SECONDS = 5
_last: dict = {}  # what was checked (settings) -> (monotonic time, ready)


def _check_database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        close_old_connections()


async def _check_redis() -> None:
    if not settings.REDIS_URL:
        return
    from chatsvc.messaging import runtime

    await runtime.room_stream().redis.ping()  # the pool the service uses, not a new connection


async def _check_sqs() -> None:
    if not settings.CHAT_QUEUE_URL:
        raise RuntimeError("CHAT_QUEUE_URL is not set")
    await asyncio.to_thread(
        clients.sqs().get_queue_attributes,
        QueueUrl=settings.CHAT_QUEUE_URL,
        AttributeNames=["QueueArn"],
    )


async def _check_all() -> bool:
    checks = {
        "database": sync_to_async(_check_database, thread_sensitive=False)(),
        "redis": _check_redis(),
        "sqs": _check_sqs(),
    }
    results = await asyncio.gather(
        *(asyncio.wait_for(check, CHECK_TIMEOUT_SECONDS) for check in checks.values()),
        return_exceptions=True,
    )
    failing = {
        name: f"{type(result).__name__}: {result}"[:300]
        for name, result in zip(checks, results, strict=True)
        if result is not None
    }
    if failing:
        logger.warning("not ready", extra={"failing": failing})
    return not failing


async def readiness() -> bool:
    key = (settings.DATABASES["default"]["NAME"], settings.REDIS_URL, settings.CHAT_QUEUE_URL)
    checked = _last.get(key)
    if checked is not None and time.monotonic() - checked[0] < READY_CACHE_SECONDS:
        return checked[1]
    ready = await _check_all()
    _last.clear()
    _last[key] = (time.monotonic(), ready)
    return ready


async def _respond(send, status: int, body: dict) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class HealthProbes:
    """ASGI middleware answering /healthz and /readyz itself."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/healthz":
            await _respond(send, 200, {"status": "ok"})
        elif scope["type"] == "http" and scope["path"] == "/readyz":
            ready = await readiness()
            await _respond(
                send, 200 if ready else 503, {"status": "ok" if ready else "unavailable"}
            )
        else:
            await self.app(scope, receive, send)
