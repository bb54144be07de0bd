"""Remembers each (tenant, room, sender, client_id) so a resend maps to the same message.

`claim(key, record)` stores `record` if the key is new and returns None, or
returns the record stored first. `mark_acked(key, record)` notes that SQS
accepted the message, so a later resend is answered with the same ack and
nothing else.
Redis-backed when REDIS_URL is set (shared by all web processes), in-process
otherwise.
"""

import json
import time
from collections import OrderedDict


class MemoryDedupStore:
    def __init__(self, *, ttl_seconds: int, max_entries: int = 200_000, clock=time.monotonic):
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, dict]] = OrderedDict()

    def _prune(self) -> None:
        now = self.clock()
        while self._entries:
            key, (expires, _) = next(iter(self._entries.items()))
            if expires > now and len(self._entries) <= self.max_entries:
                break
            del self._entries[key]

    async def claim(self, key: str, record: dict) -> dict | None:
        self._prune()
        existing = self._entries.get(key)
        if existing is not None:
            return existing[1]
        self._entries[key] = (self.clock() + self.ttl, record)
        return None

    async def mark_acked(self, key: str, record: dict) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            entry[1]["acked"] = True

    async def close(self) -> None:
        self._entries.clear()


class RedisDedupStore:
    def __init__(
        self, *, url: str, ttl_seconds: int, prefix: str = "chatsvc:dedup:", max_connections=32
    ):
        import redis.asyncio as aioredis

        # redis-py's default pool raises MaxConnectionsError once 100 commands are
        # in flight; a blocking pool makes bursts wait for a connection instead.
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=10, health_check_interval=30
        )
        self.redis = aioredis.Redis(connection_pool=pool)
        self.ttl = ttl_seconds
        self.prefix = prefix

    async def claim(self, key: str, record: dict) -> dict | None:
        full = self.prefix + key
        if await self.redis.set(full, json.dumps(record), nx=True, ex=self.ttl):
            return None
        stored = await self.redis.get(full)
        if stored is None:  # expired between the two calls: claim again
            return await self.claim(key, record)
        return json.loads(stored)

    async def mark_acked(self, key: str, record: dict) -> None:
        acked = json.dumps({**record, "acked": True})
        await self.redis.set(self.prefix + key, acked, xx=True, keepttl=True)

    async def close(self) -> None:
        await self.redis.aclose()
