"""Who is in each room: the presence store behind `joined.members`, `presence`
events and GET /api/v1/connections/{id}/members.

An entry is a socket in a room, owned by a user; the room's members are its
users, de-duplicated: a user with three sockets in the room is one member,
who joined with the first socket and leaves with the last. `add` and
`remove` say when that happens, so the `presence` events sent to the room
follow the store exactly.

With Redis (every web process shares it) each room has five keys under one
hash tag, changed only by the Lua scripts below, atomically:

    sockets  ZSET  socket id -> expiry (ms): the heartbeat
    owner    HASH  socket id -> user id
    refs     HASH  user id   -> number of the user's sockets in the room
    order    ZSET  user id   -> when the user's first socket joined (ms)
    users    HASH  user id   -> {"id", "name", "role"} (JSON, latest token's)

Each web process renews its sockets' expiry on its revalidation sweep
(CHAT_REVALIDATE_SECONDS); an entry not renewed for STALE_AFTER_SWEEPS sweeps
belongs to a process that died: the next write or read of the room drops it,
and a user who loses their last socket that way is announced as left. The
keys expire as a whole when nobody renews them.

Without Redis (local mode: one process) the same lives in this process's
memory, shared by its event loop and the REST views' threads.
"""

import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cache

import redis
from django.conf import settings
from redis.exceptions import RedisError

from chatsvc.core.per_loop import PerLoop
from chatsvc.messaging import runtime
from chatsvc.streams import REDIS_OUTAGES

logger = logging.getLogger(__name__)

STALE_AFTER_SWEEPS = 3


def ttl_ms() -> int:
    return STALE_AFTER_SWEEPS * settings.CHAT_REVALIDATE_SECONDS * 1000


def _now_ms() -> int:
    return int(time.time() * 1000)


def member_of(user) -> dict:
    """A ChatUser as a member: {id, name, role}."""
    return {"id": user.id, "name": user.name, "role": user.role}


@dataclass(frozen=True)
class Members:
    members: list[dict]  # the first `limit` members by join time
    count: int  # every member

    def fields(self) -> dict:
        return {"members": self.members, "member_count": self.count}


@dataclass(frozen=True)
class Added:
    first: bool  # the user's first socket in the room: announce `presence joined`
    members: Members
    gone: list[dict] = field(default_factory=list)  # reaped: announce `presence left`


# --- Redis ----------------------------------------------------------------------------

_COMMON = """
local function drop(sid)
  redis.call('ZREM', KEYS[1], sid)
  local uid = redis.call('HGET', KEYS[2], sid)
  if not uid then return false end
  redis.call('HDEL', KEYS[2], sid)
  if redis.call('HINCRBY', KEYS[3], uid, -1) > 0 then return false end
  local member = redis.call('HGET', KEYS[5], uid)
  redis.call('HDEL', KEYS[3], uid)
  redis.call('ZREM', KEYS[4], uid)
  redis.call('HDEL', KEYS[5], uid)
  return member or cjson.encode({id = uid, name = uid})
end
local function reap(now)
  local gone = {}
  for _, sid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
    local member = drop(sid)
    if member then table.insert(gone, member) end
  end
  return gone
end
local function keep(ttl)
  for i = 1, 5 do redis.call('PEXPIRE', KEYS[i], ttl) end
end
local function listing(limit)
  local ids = redis.call('ZRANGE', KEYS[4], 0, limit - 1)
  local members = {}
  if #ids > 0 then members = redis.call('HMGET', KEYS[5], unpack(ids)) end
  return {redis.call('ZCARD', KEYS[4]), members}
end
"""

# ARGV: socket id, user id, member JSON, now (ms), ttl (ms), limit
_ADD = (
    _COMMON
    + """
local sid, uid, now, ttl = ARGV[1], ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[5])
local gone = reap(now)
local first = 0
if redis.call('HSETNX', KEYS[2], sid, uid) == 1 then
  if redis.call('HINCRBY', KEYS[3], uid, 1) == 1 then
    first = 1
    redis.call('ZADD', KEYS[4], now, uid)
  end
end
redis.call('ZADD', KEYS[1], now + ttl, sid)
redis.call('HSET', KEYS[5], uid, ARGV[3])
keep(2 * ttl)
return {first, listing(tonumber(ARGV[6])), gone}
"""
)

# ARGV: socket id. Returns the member JSON when it was the user's last socket.
_REMOVE = (
    _COMMON
    + """
return drop(ARGV[1])
"""
)

# ARGV: now (ms), ttl (ms), socket ids... Returns the reaped members.
_RENEW = (
    _COMMON
    + """
local now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 3, #ARGV do redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i]) end
local gone = reap(now)
if redis.call('EXISTS', KEYS[1]) == 1 then keep(2 * ttl) end
return gone
"""
)

# ARGV: now (ms), limit
_READ = (
    _COMMON
    + """
local gone = reap(tonumber(ARGV[1]))
return {listing(tonumber(ARGV[2])), gone}
"""
)


def _keys(connection_id: str) -> list[str]:
    prefix = f"chatsvc:presence:{{{connection_id}}}"
    return [f"{prefix}:{name}" for name in ("sockets", "owner", "refs", "order", "users")]


def _decoded(raw) -> dict:
    return json.loads(raw)


def _listing(raw) -> Members:
    count, members = raw
    return Members([_decoded(m) for m in members if m is not None], int(count))


class RedisPresence:
    def __init__(self, client):
        self.client = client
        self._add = client.register_script(_ADD)
        self._remove = client.register_script(_REMOVE)
        self._renew = client.register_script(_RENEW)
        self._read = client.register_script(_READ)

    async def add(self, connection_id: str, socket_id: str, member: dict, *, limit: int) -> Added:
        first, listing, gone = await self._add(
            keys=_keys(connection_id),
            args=[socket_id, member["id"], json.dumps(member), _now_ms(), ttl_ms(), limit],
        )
        return Added(bool(first), _listing(listing), [_decoded(m) for m in gone])

    async def remove(self, connection_id: str, socket_id: str) -> dict | None:
        gone = await self._remove(keys=_keys(connection_id), args=[socket_id])
        return _decoded(gone) if gone else None

    async def members(self, connection_id: str, *, limit: int) -> Members:
        raw, gone = await self._read(keys=_keys(connection_id), args=[_now_ms(), limit])
        await _announce_left(connection_id, [_decoded(m) for m in gone])
        return _listing(raw)

    async def renew(self, rooms: dict[str, list[str]]) -> dict[str, list[dict]]:
        """Push back the expiry of these sockets (room -> socket ids); returns the reaped."""
        reaped = {}
        for connection_id, socket_ids in rooms.items():
            gone = await self._renew(
                keys=_keys(connection_id), args=[_now_ms(), ttl_ms(), *socket_ids]
            )
            if gone:
                reaped[connection_id] = [_decoded(m) for m in gone]
        return reaped


@cache
def _blocking_read(url: str):
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    return client.register_script(_READ)


# --- in memory (local mode) -----------------------------------------------------------

_lock = threading.Lock()
_rooms: dict[str, OrderedDict[str, dict]] = {}  # room -> socket id -> member, in join order


def _memory_members(connection_id: str, limit: int) -> Members:
    users: dict[str, dict] = {}
    for member in _rooms.get(connection_id, {}).values():
        users.setdefault(member["id"], member)
    return Members(list(users.values())[:limit], len(users))


def _holds(sockets, user_id: str) -> bool:
    return any(member["id"] == user_id for member in sockets.values())


class MemoryPresence:
    async def add(self, connection_id: str, socket_id: str, member: dict, *, limit: int) -> Added:
        with _lock:
            sockets = _rooms.setdefault(connection_id, OrderedDict())
            first = socket_id not in sockets and not _holds(sockets, member["id"])
            sockets[socket_id] = member
            for other in sockets.values():  # the latest token's name for every socket
                if other["id"] == member["id"]:
                    other.update(member)
            return Added(first, _memory_members(connection_id, limit))

    async def remove(self, connection_id: str, socket_id: str) -> dict | None:
        with _lock:
            sockets = _rooms.get(connection_id)
            if sockets is None or (member := sockets.pop(socket_id, None)) is None:
                return None
            if not sockets:
                del _rooms[connection_id]
            return None if _holds(sockets, member["id"]) else member

    async def members(self, connection_id: str, *, limit: int) -> Members:
        with _lock:
            return _memory_members(connection_id, limit)

    async def renew(self, rooms: dict[str, list[str]]) -> dict[str, list[dict]]:
        return {}  # one process: its sockets leave the store when they close


# --- access ---------------------------------------------------------------------------


def _new_store():
    if settings.REDIS_URL:
        return RedisPresence(runtime.room_stream().redis)
    return MemoryPresence()


_stores = PerLoop(_new_store)


def store() -> RedisPresence | MemoryPresence:
    """This event loop's presence store."""
    return _stores.get()


def list_limit() -> int:
    return settings.CHAT_PRESENCE_LIST_MAX


def members_blocking(connection_id: str, *, limit: int) -> Members:
    """The room's members, for synchronous callers (REST). Raises REDIS_OUTAGES."""
    if not settings.REDIS_URL:
        with _lock:
            return _memory_members(connection_id, limit)
    raw, gone = _blocking_read(settings.REDIS_URL)(
        keys=_keys(connection_id), args=[_now_ms(), limit]
    )
    if gone:
        from chatsvc.realtime import events

        try:
            events.presence_left(connection_id, [_decoded(m) for m in gone])
        except Exception:  # the members list is right; the room hears of it on a later read
            logger.exception("presence left not published", extra={"connection_id": connection_id})
    return _listing(raw)


async def enter(socket, connection_id: str) -> Added:
    """Put a joining socket in the room's presence; announces members reaped meanwhile.

    Raises REDIS_OUTAGES: the join fails with `unavailable` and is retried.
    """
    added = await store().add(
        connection_id, socket.socket_id, member_of(socket.user), limit=list_limit()
    )
    await _announce_left(connection_id, added.gone)
    return added


async def leave(socket, connection_id: str) -> bool:
    """Take a socket out of the room's presence; True when it was its user's last one.

    Never raises: while Redis is unreachable (or refuses: a demoted primary's
    READONLY, OOM) the entry stays and fades out unrenewed.
    """
    try:
        return await store().remove(connection_id, socket.socket_id) is not None
    except (*REDIS_OUTAGES, RedisError) as exc:
        logger.warning("presence not updated: Redis unavailable", extra={"error": str(exc)})
        return False


async def renew(sockets) -> None:
    """Heartbeat of this process's sockets (the revalidation sweep); announces the reaped."""
    rooms: dict[str, list[str]] = {}
    for socket in sockets:
        for connection_id in socket.rooms:
            rooms.setdefault(connection_id, []).append(socket.socket_id)
    if not rooms:
        return
    try:
        reaped = await store().renew(rooms)
    except REDIS_OUTAGES as exc:
        logger.warning("presence not renewed: Redis unavailable", extra={"error": str(exc)})
        return
    for connection_id, users in reaped.items():
        await _announce_left(connection_id, users)


async def _announce_left(connection_id: str, users: list[dict]) -> None:
    from chatsvc.realtime import events

    for user in users:
        await events.broadcast(connection_id, events.presence_frame(connection_id, user, "left"))
