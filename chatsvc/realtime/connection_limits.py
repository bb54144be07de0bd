"""How many sockets a user, and an unauthenticated client address, may hold.

Per user (tenant + token subject), across every web process: a Redis sorted
set of the user's socket ids, scored by when each was last seen alive. Each
process refreshes its sockets on the revalidation sweep; entries of a
process that died fade out after STALE_AFTER_SWEEPS sweeps. Without Redis
(one process) the same in memory.

Per client address, before authentication: counted in this process only
(CHAT_MAX_UNAUTHENTICATED_PER_ADDRESS); with N web tasks an address can hold
N times that, each socket for at most the auth deadline.
"""

import logging
import time
from collections import Counter, defaultdict

from django.conf import settings

from chatsvc.core.per_loop import PerLoop
from chatsvc.messaging import runtime
from chatsvc.streams import REDIS_OUTAGES as OUTAGES

logger = logging.getLogger(__name__)

STALE_AFTER_SWEEPS = 3

unauthenticated: Counter = Counter()  # client address -> sockets not yet authenticated


def _key(user) -> str:
    return f"chatsvc:sockets:{{{user.tenant.id}}}:{user.id}"


def _stale_before() -> float:
    return time.time() - STALE_AFTER_SWEEPS * settings.CHAT_REVALIDATE_SECONDS


class RedisUserSockets:
    """Fails open: while Redis is unreachable sockets are admitted uncounted (the
    cap bounds resources; it is not an access check)."""

    def __init__(self, redis):
        self.redis = redis

    async def admit(self, user, socket_id: str) -> bool:
        try:
            return await self._admit(user, socket_id)
        except OUTAGES as exc:
            logger.warning("socket cap not checked: Redis unavailable", extra={"error": str(exc)})
            return True

    async def _admit(self, user, socket_id: str) -> bool:
        key, now = _key(user), time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, 0, _stale_before())
            pipe.zadd(key, {socket_id: now})
            pipe.zcard(key)
            pipe.expire(key, STALE_AFTER_SWEEPS * settings.CHAT_REVALIDATE_SECONDS * 2)
            _, _, held, _ = await pipe.execute()
        if held <= user.tenant.max_sockets_per_user:
            return True
        # Over the cap (two racing at the last place both step back: the safe side).
        await self.redis.zrem(key, socket_id)
        return False

    async def release(self, user, socket_id: str) -> None:
        try:
            await self.redis.zrem(_key(user), socket_id)
        except OUTAGES:
            pass  # the entry fades out with the stale ones

    async def refresh(self, sockets) -> None:
        now = time.time()
        async with self.redis.pipeline(transaction=False) as pipe:
            for socket in sockets:
                pipe.zadd(_key(socket.user), {socket.socket_id: now}, xx=True)
            await pipe.execute()


class MemoryUserSockets:
    def __init__(self):
        self.sockets: dict[str, set[str]] = defaultdict(set)

    async def admit(self, user, socket_id: str) -> bool:
        held = self.sockets[_key(user)]
        if len(held) >= user.tenant.max_sockets_per_user:
            return False
        held.add(socket_id)
        return True

    async def release(self, user, socket_id: str) -> None:
        self.sockets[_key(user)].discard(socket_id)

    async def refresh(self, sockets) -> None:
        pass


def _new_registry():
    if settings.REDIS_URL:
        return RedisUserSockets(runtime.room_stream().redis)
    return MemoryUserSockets()


_registries = PerLoop(_new_registry)


def user_sockets():
    return _registries.get()
