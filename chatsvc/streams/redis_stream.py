"""The room stream on Redis: Lua scripts for atomic writes, one pub/sub connection per process.

Keys per room, hash-tagged so a room's keys share a cluster slot:
  chatsvc:{<cid>}:state       hash {epoch, seq, last_id}
  chatsvc:{<cid>}:log         list of "<ms>|<seq>|<id>|<frame>", a contiguous suffix of the room
  chatsvc:{<cid>}:sent:<key>  hash {acked, seq, frame}: one sender's client_id
  chatsvc:{<cid>}:m:<id>      hash: one message's record (edits, deletion, reactions)
  chatsvc:{<cid>}:reads       hash {user id: "epoch|seq|count"}: read positions
  chatsvc:reader:<tenant>:<user>  set of the connection_ids the user has read
and the channel chatsvc:room:<cid>, carrying "<seq>|<frame>" for a message and
"*<payload>" for an unsequenced event.
"""

import asyncio
import json
import logging
from functools import cache
from pathlib import Path

import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chatsvc.core.cancellation import raise_if_cancelled
from chatsvc.streams import REDIS_OUTAGES as OUTAGES
from chatsvc.streams import (
    Appended,
    Change,
    Entry,
    Listener,
    Reacted,
    Reaction,
    ReadMark,
    RecordChanged,
    Refused,
    StreamUnavailable,
    Tail,
    Unread,
    Window,
    new_epoch,
    parse_entry,
    unread_of,
)

logger = logging.getLogger(__name__)

SCRIPTS = Path(__file__).with_name("scripts")
CHANNEL_PREFIX = "chatsvc:room:"
EVENT_MARK = "*"  # an event's payload follows; a message starts with its seq
STATE_TTL_SECONDS = 7 * 86400  # an idle room's seq state; a lost one starts a new epoch
# A message record outlives the replay log; once gone it is seeded again from
# DynamoDB, which has every change persisted by then.
RECORD_TTL_SECONDS = 7 * 86400
READS_TTL_SECONDS = 90 * 86400  # read positions of a room nobody read for this long go
PING_SECONDS = 10  # a silent pub/sub connection is checked this often


def _source(name: str) -> str:
    return (SCRIPTS / "room.lua").read_text() + (SCRIPTS / f"{name}.lua").read_text()


def _script(client: aioredis.Redis, name: str):
    return client.register_script(_source(name))


@cache
def _blocking_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


@cache
def _blocking_init(url: str):
    return _blocking_client(url).register_script(_source("init"))


def init_room_blocking(url: str, connection_id: str) -> None:
    """Start a new room's sequence at 0 (for synchronous callers: room creation)."""
    try:
        _blocking_init(url)(keys=_keys(connection_id), args=[new_epoch(), STATE_TTL_SECONDS])
    except OUTAGES as exc:
        raise StreamUnavailable(str(exc)) from exc


def publish_event_blocking(url: str, connection_id: str, payload: str) -> None:
    """Publish an event to the room's subscribers (for synchronous callers)."""
    try:
        _blocking_client(url).publish(CHANNEL_PREFIX + connection_id, EVENT_MARK + payload)
    except OUTAGES as exc:
        raise StreamUnavailable(str(exc)) from exc


def _keys(connection_id: str) -> tuple[str, str]:
    return f"chatsvc:{{{connection_id}}}:state", f"chatsvc:{{{connection_id}}}:log"


def _appended(reply: list) -> Appended:
    """A script's {new, acked, seq, frame[, state]} (state: a resent content event's)."""
    new, acked, seq, frame, *rest = reply
    state = rest[0].decode() if rest and isinstance(rest[0], bytes) else ""
    return Appended(bool(new), bool(acked), int(seq), frame.decode(), state)


def _sent_key(connection_id: str, sent_key: str) -> str:
    return f"chatsvc:{{{connection_id}}}:sent:{sent_key}"


def _reads_key(connection_id: str) -> str:
    return f"chatsvc:{{{connection_id}}}:reads"


def _reader_key(tenant_id: str, user_id: str) -> str:
    return f"chatsvc:reader:{tenant_id}:{user_id}"


def _record_key(connection_id: str, message_id: str) -> str:
    return f"chatsvc:{{{connection_id}}}:m:{message_id}"


class RedisRoomStream:
    def __init__(self, *, url: str, window: Window):
        # A pooled connection that Redis dropped (restart, failover, idle kill)
        # fails its next command once; the retry reconnects, so callers do not
        # see it. Retrying a write is safe: the append script is idempotent on
        # the sender's client_id.
        self.redis = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=64,
                timeout=5,
                socket_timeout=5,
                socket_connect_timeout=2,
                health_check_interval=30,
                retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 3),
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
            )
        )
        # The subscriber does not retry by itself: a lost connection surfaces in
        # the reader, which logs it once, subscribes every room again and lets
        # each feed repair what it missed.
        self.subscriber = aioredis.Redis.from_url(
            url, socket_connect_timeout=2, retry=Retry(NoBackoff(), 0)
        )
        self.window = window
        self._append = _script(self.redis, "append")
        self._tail = _script(self.redis, "tail")
        self._recent = _script(self.redis, "recent")
        self._apply = _script(self.redis, "apply")
        self._find = _script(self.redis, "find")
        self._react = _script(self.redis, "react")
        self._mark_read = _script(self.redis, "read")
        self.listener: Listener | None = None
        self.rooms: set[str] = set()
        self._pubsub = None
        self._reader: asyncio.Task | None = None

    # --- writes and reads ----------------------------------------------------------

    def _sequence_args(self, connection_id: str, message_id: str, head: str, tail: str) -> list:
        window = self.window
        return [
            CHANNEL_PREFIX + connection_id,
            message_id,
            new_epoch(),
            head,
            tail,
            window.keep_messages,
            window.keep_seconds * 1000,
            window.max_messages,
            window.sent_ttl_seconds,
            STATE_TTL_SECONDS,
            max(window.keep_seconds, 3600),
        ]

    async def append(
        self, *, connection_id: str, sent_key: str, message_id: str, head: str, tail: str
    ) -> Appended:
        state, log = _keys(connection_id)
        reply = await self._call(
            self._append,
            keys=[_sent_key(connection_id, sent_key), state, log],
            args=self._sequence_args(connection_id, message_id, head, tail),
        )
        return _appended(reply)

    async def apply(self, change: Change) -> Appended:
        """Append an event and change its message's record atomically (streams.Change)."""
        cid = change.connection_id
        state, log = _keys(cid)
        reply = await self._call(
            self._apply,
            keys=[_sent_key(cid, change.sent_key), state, log, _record_key(cid, change.message_id)],
            args=[
                *self._sequence_args(cid, change.event_id, change.head, change.tail),
                change.version,
                "" if change.seed is None else json.dumps(change.seed),
                json.dumps(change.fields),
                RECORD_TTL_SECONDS,
                json.dumps(list(change.seq_fields)),
                json.dumps(change.state or {}),
            ],
        )
        if reply[0] < 0:
            raise RecordChanged(reply[3].decode())
        return _appended(reply)

    async def react(self, reaction: Reaction) -> Reacted:
        """Toggle a reaction and post its event atomically (streams.Reaction)."""
        cid = reaction.connection_id
        state, log = _keys(cid)
        reply = await self._call(
            self._react,
            keys=[
                _sent_key(cid, reaction.sent_key),
                state,
                log,
                _record_key(cid, reaction.message_id),
            ],
            args=[
                *self._sequence_args(cid, reaction.event_id, reaction.head, reaction.tail),
                "" if reaction.seed is None else json.dumps(reaction.seed),
                reaction.emoji,
                reaction.user_id,
                reaction.max_kinds,
                reaction.max_reactions,
                reaction.shown,
                RECORD_TTL_SECONDS,
                json.dumps(reaction.expires_at),
            ],
        )
        if reply[0] == -1:
            raise RecordChanged("missing")
        if reply[0] < 0:
            raise Refused(reply[3].decode())
        if reply[0] == 0:  # a resend
            return Reacted(_appended(reply), None)
        return Reacted(_appended(reply[:4]), json.loads(reply[4]))

    async def mark_read(self, connection_id: str, *, tenant_id: str, user_id: str, seq: int):
        """Move the user's read position forward (streams.ReadMark); remember the room
        among the user's rooms (for their unread counts)."""
        state, log = _keys(connection_id)
        moved, epoch, seq, count = await self._call(
            self._mark_read,
            keys=[state, log, _reads_key(connection_id)],
            args=[user_id, seq, new_epoch(), READS_TTL_SECONDS, STATE_TTL_SECONDS],
        )
        if moved:
            try:
                reader = _reader_key(tenant_id, user_id)
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.sadd(reader, connection_id).expire(reader, READS_TTL_SECONDS)
                    await pipe.execute()
            except OUTAGES as exc:
                raise StreamUnavailable(str(exc)) from exc
        return ReadMark(bool(moved), epoch.decode(), int(seq), int(count))

    async def unread(
        self, *, tenant_id: str, user_id: str, connection_ids: list[str] | None = None
    ) -> list[Unread]:
        """Unread messages per room: of `connection_ids`, or of the rooms the user read."""
        try:
            if connection_ids is None:
                members = await self.redis.smembers(_reader_key(tenant_id, user_id))
                connection_ids = sorted(member.decode() for member in members)
            async with self.redis.pipeline(transaction=False) as pipe:
                for cid in connection_ids:
                    pipe.hmget(_keys(cid)[0], "epoch", "messages")
                    pipe.hget(_reads_key(cid), user_id)
                replies = await pipe.execute()
        except OUTAGES as exc:
            raise StreamUnavailable(str(exc)) from exc
        result = []
        for index, cid in enumerate(connection_ids):
            (epoch, messages), mark = replies[2 * index], replies[2 * index + 1]
            result.append(
                unread_of(
                    cid,
                    epoch=epoch.decode() if epoch else None,
                    messages=int(messages or 0),
                    mark=mark.decode() if mark else None,
                )
            )
        return result

    async def record(self, connection_id: str, message_id: str) -> dict[str, str] | None:
        try:
            found = await self.redis.hgetall(_record_key(connection_id, message_id))
        except OUTAGES as exc:
            raise StreamUnavailable(str(exc)) from exc
        return {k.decode(): v.decode() for k, v in found.items()} or None

    async def records(self, connection_id: str, message_ids: list[str]) -> dict[str, dict]:
        """The records of those messages that have one (history overlays them)."""
        if not message_ids:
            return {}
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for message_id in message_ids:
                    pipe.hgetall(_record_key(connection_id, message_id))
                found = await pipe.execute()
        except OUTAGES as exc:
            raise StreamUnavailable(str(exc)) from exc
        return {
            message_id: {k.decode(): v.decode() for k, v in record.items()}
            for message_id, record in zip(message_ids, found, strict=True)
            if record
        }

    async def find(self, connection_id: str, message_id: str) -> Entry | None:
        _, log = _keys(connection_id)
        reply = await self._call(self._find, keys=[log], args=[message_id])
        return parse_entry(reply[0].decode()) if reply else None

    async def first(self, connection_id: str, sent_key: str) -> Appended | None:
        """What a client_id already claimed posted, if anything (a resend)."""
        try:
            acked, seq, frame, state = await self.redis.hmget(
                _sent_key(connection_id, sent_key), "acked", "seq", "frame", "state"
            )
        except OUTAGES as exc:
            raise StreamUnavailable(str(exc)) from exc
        if frame is None:
            return None
        return Appended(False, acked == b"1", int(seq), frame.decode(), (state or b"").decode())

    async def mark_acked(self, *, connection_id: str, sent_key: str) -> None:
        try:
            await self.redis.hset(_sent_key(connection_id, sent_key), "acked", 1)
        except OUTAGES as exc:
            raise StreamUnavailable(str(exc)) from exc

    async def tail(self, connection_id: str, since: int | None) -> Tail:
        reply = await self._call(
            self._tail,
            keys=_keys(connection_id),
            args=[new_epoch(), -1 if since is None else since],
        )
        epoch, seq, complete, *entries = reply
        return Tail(
            epoch.decode(),
            int(seq),
            [parse_entry(raw.decode()) for raw in entries] if complete else None,
        )

    async def recent(self, connection_id: str, *, before: str | None, limit: int) -> list[Entry]:
        _, log = _keys(connection_id)
        reply = await self._call(self._recent, keys=[log], args=[before or "", limit])
        return [parse_entry(raw.decode()) for raw in reply]

    async def publish_event(self, connection_id: str, payload: str) -> None:
        try:
            await self.redis.publish(CHANNEL_PREFIX + connection_id, EVENT_MARK + payload)
        except OUTAGES as exc:
            raise StreamUnavailable(str(exc)) from exc

    async def _call(self, script, *, keys, args):
        try:
            return await script(keys=keys, args=args)
        except OUTAGES as exc:
            raise StreamUnavailable(str(exc)) from exc

    # --- subscriptions -------------------------------------------------------------

    def listen(self, listener: Listener) -> None:
        self.listener = listener

    async def subscribe(self, connection_id: str) -> None:
        """Start receiving the room; the listener hears on_subscribed once it is in place."""
        self.rooms.add(connection_id)
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name="room-stream")
        elif self._pubsub is not None:
            await self._command(self._pubsub.subscribe, CHANNEL_PREFIX + connection_id)

    async def unsubscribe(self, connection_id: str) -> None:
        self.rooms.discard(connection_id)
        if self._pubsub is not None:
            await self._command(self._pubsub.unsubscribe, CHANNEL_PREFIX + connection_id)

    async def _command(self, command, channel: str) -> None:
        try:
            await command(channel)
        except Exception as exc:
            # A broken connection: a connection error, or, when redis-py closes or
            # reopens it under the reader, AttributeError or RuntimeError (seen with
            # 10,000 sockets leaving at once). Drop it: the reader connects again and
            # subscribes every room it still needs, then the listener repairs each.
            logger.info("pub/sub command failed; reconnecting", extra={"error": repr(exc)})
            await _quietly_close(self._pubsub)

    async def _read(self) -> None:
        """Receive forever; after a lost connection, subscribe again and let the listener repair."""
        backoff, working = 0.05, True
        while True:
            pubsub = self.subscriber.pubsub()
            try:
                await self._open(pubsub)
                if not working:
                    logger.warning("room stream subscription restored")
                backoff, working = 0.05, True
                while True:
                    raise_if_cancelled()  # a listener's Redis call may have swallowed it
                    message = await pubsub.get_message(timeout=PING_SECONDS)
                    if message is None:
                        await pubsub.ping()
                        continue
                    await self._dispatch(message)
            except asyncio.CancelledError:
                raise
            except OUTAGES as exc:
                if working:  # once per outage, not once per attempt
                    logger.warning(
                        "room stream subscription lost; resubscribing", extra={"error": str(exc)}
                    )
                working = False
            except Exception:
                logger.exception("room stream reader failed; resubscribing")
                working = False
            finally:
                self._pubsub = None
                await _quietly_close(pubsub)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _open(self, pubsub) -> None:
        """Connect, subscribe every room, then let subscribe() use the connection.

        Until the connection exists, subscribe() only records its room: redis-py
        gives each concurrent first command on a PubSub a connection of its own,
        and a room subscribed on a connection nobody reads would never sync (a
        reconnect storm's first joins all came at once and timed out).
        """
        await pubsub.connect()
        subscribed = set(self.rooms)
        if subscribed:
            await pubsub.subscribe(*(CHANNEL_PREFIX + room for room in subscribed))
        self._pubsub = pubsub
        # Rooms that came while we subscribed; twice at worst (a confirmation
        # only triggers a repair check).
        if missing := self.rooms - subscribed:
            await pubsub.subscribe(*(CHANNEL_PREFIX + room for room in missing))

    async def _dispatch(self, message: dict) -> None:
        kind = message["type"]
        if kind not in ("message", "subscribe"):
            return
        connection_id = message["channel"].decode()[len(CHANNEL_PREFIX) :]
        if self.listener is None:
            return
        if kind == "subscribe":
            self.listener.on_subscribed(connection_id)
            return
        data = message["data"].decode()
        if data.startswith(EVENT_MARK):
            await self.listener.on_event(connection_id, data[1:])
            return
        seq, frame = data.split("|", 1)
        await self.listener.on_frame(connection_id, int(seq), frame)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.subscriber.aclose()
        await self.redis.aclose()


async def _quietly_close(pubsub) -> None:
    try:
        await pubsub.aclose()
    except Exception:  # noqa: S110 - the connection is being thrown away
        pass


__all__ = ["Entry", "RedisRoomStream"]
