"""Load balancer probes, answered before Django's host validation.

ALB health checks address the task by IP, which ALLOWED_HOSTS cannot list;
these two paths carry no data worth protecting, so they bypass it.
/healthz: the process is alive (no dependencies). /readyz: database, Redis
and SQS are reachable.
"""

import asyncio
import json

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections, connection

from chatsvc.aws import clients

CHECK_TIMEOUT_SECONDS = 3


def _check_database() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        close_old_connections()


async def _check_redis() -> None:
    if not settings.REDIS_URL:
        return
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    finally:
        await client.aclose()


async def _check_sqs() -> None:
    if not settings.CHAT_QUEUE_URL:
        raise RuntimeError("CHAT_QUEUE_URL is not set")
    await asyncio.to_thread(
        clients.sqs().get_queue_attributes,
        QueueUrl=settings.CHAT_QUEUE_URL,
        AttributeNames=["QueueArn"],
    )


async def readiness() -> tuple[bool, dict]:
    checks = {
        "database": sync_to_async(_check_database, thread_sensitive=False)(),
        "redis": _check_redis(),
        "sqs": _check_sqs(),
    }
    results = await asyncio.gather(
        *(asyncio.wait_for(check, CHECK_TIMEOUT_SECONDS) for check in checks.values()),
        return_exceptions=True,
    )
    report = {
        name: "ok" if result is None else f"error: {type(result).__name__}: {result}"[:300]
        for name, result in zip(checks, results, strict=True)
    }
    if not settings.REDIS_URL:
        report["redis"] = "not configured (in-memory channel layer)"
    return all(result is None for result in results), report


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
            ready, report = await readiness()
            await _respond(
                send,
                200 if ready else 503,
                {"status": "ok" if ready else "unavailable", "checks": report},
            )
        else:
            await self.app(scope, receive, send)
