"""The room stream in one process (local mode, no Redis): the same contract as Redis.

State is process-wide, like Redis's: a restart loses it, and the next
message starts a new epoch above every earlier seq.
"""

import asyncio
import json
import logging
import time
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from chatsvc.core.ulid import following
from chatsvc.messaging.message_state import shown_reactions, toggle
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
    Tail,
    Unread,
    Window,
    new_epoch,
    unread_of,
)

logger = logging.getLogger(__name__)

MESSAGE_PREFIX = '{"type":"message",'


@dataclass
class _Room:
    epoch: str
    seq: int
    last_id: str = ""
    log: deque = field(default_factory=deque)  # (ms, Entry)
    messages: int = 0  # messages (not events) posted in this epoch
    reads: dict = field(default_factory=dict)  # user id -> "epoch|seq|count"


_rooms: dict[str, _Room] = {}
_sent: OrderedDict[tuple[str, str], tuple[float, dict]] = OrderedDict()
_records: dict[tuple[str, str], dict[str, str]] = {}  # (connection_id, message_id) -> record
_readers: dict[tuple[str, str], set[str]] = {}  # (tenant_id, user_id) -> rooms read
MAX_SENT = 200_000
# Every stream of the process (one per event loop) hears every room's events,
# as every process does on Redis.
_streams: weakref.WeakSet = weakref.WeakSet()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _room(connection_id: str, *, floor: int | None = None) -> _Room:
    room = _rooms.get(connection_id)
    if room is None:
        room = _rooms[connection_id] = _Room(
            new_epoch(), _now_ms() * 1000 if floor is None else floor
        )
    return room


def init_room(connection_id: str) -> None:
    """Start a new room's sequence at 0."""
    _room(connection_id, floor=0)


def publish_event(connection_id: str, payload: str) -> None:
    """Hand an event to every stream subscribed to the room (from any thread)."""
    for stream in list(_streams):
        stream.offer_event(connection_id, payload)


class MemoryRoomStream:
    def __init__(self, *, window: Window):
        self.window = window
        self.listener: Listener | None = None
        self.rooms: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: asyncio.Queue | None = None  # (connection_id, payload), in order
        self._reader: asyncio.Task | None = None

    async def append(
        self, *, connection_id: str, sent_key: str, message_id: str, head: str, tail: str
    ) -> Appended:
        self._prune_sent()
        if (first := self._claimed(connection_id, sent_key)) is not None:
            return first
        return await self._sequence(connection_id, sent_key, message_id, head, tail)

    async def apply(self, change: Change) -> Appended:
        self._prune_sent()
        cid = change.connection_id
        if (first := self._claimed(cid, change.sent_key)) is not None:
            return first
        record = _records.get((cid, change.message_id))
        if record is None:
            if change.seed is None:
                raise RecordChanged("missing")
            record = {**change.seed, "ver": "0"}
        if record["ver"] != change.version:
            raise RecordChanged("conflict")
        _records[(cid, change.message_id)] = record
        appended = await self._sequence(
            cid,
            change.sent_key,
            change.event_id,
            change.head,
            change.tail,
            state=json.dumps(change.state or {}),
        )
        for name, value in change.fields.items():
            if value is False:
                record.pop(name, None)
            else:
                record[name] = value
        for name in change.seq_fields:
            record[name] = str(appended.seq)
        record["ver"] = str(int(record["ver"]) + 1)
        return appended

    async def react(self, reaction: Reaction) -> Reacted:
        self._prune_sent()
        cid = reaction.connection_id
        if (first := self._claimed(cid, reaction.sent_key)) is not None:
            return Reacted(first, None)
        record = _records.get((cid, reaction.message_id))
        if record is None:
            if reaction.seed is None:
                raise RecordChanged("missing")
            record = {**reaction.seed, "ver": "0"}
        if record.get("deleted") == "1":
            raise Refused("message_deleted")
        reactions = json.loads(record.get("reactions", "[]"))
        try:
            added = toggle(
                reactions,
                reaction.emoji,
                reaction.user_id,
                max_kinds=reaction.max_kinds,
                max_reactions=reaction.max_reactions,
            )
        except ValueError as broken:
            raise Refused(str(broken)) from None
        shown = json.dumps(shown_reactions(reactions, reaction.shown), ensure_ascii=False)
        tail = f'{reaction.tail},"added":{json.dumps(added)},"reactions":{shown}}}'
        _records[(cid, reaction.message_id)] = record
        kept = json.dumps(reactions, ensure_ascii=False)
        appended = await self._sequence(
            cid,
            reaction.sent_key,
            reaction.event_id,
            reaction.head,
            tail,
            state=json.dumps(
                {"state": {"reactions": reactions}, "expires_at": reaction.expires_at},
                ensure_ascii=False,
            ),
        )
        record.update(
            reactions=kept,
            reactions_rev=str(appended.seq),
            ver=str(int(record["ver"]) + 1),
        )
        return Reacted(appended, reactions)

    async def mark_read(self, connection_id: str, *, tenant_id: str, user_id: str, seq: int):
        room = _room(connection_id)
        seq = min(seq, room.seq)
        if (old := room.reads.get(user_id)) is not None:
            old_epoch, old_seq, old_count = old.split("|")
            if old_epoch == room.epoch and int(old_seq) >= seq:
                return ReadMark(False, room.epoch, int(old_seq), int(old_count))
        after = sum(
            1 for _, entry in room.log if entry.seq > seq and entry.frame.startswith(MESSAGE_PREFIX)
        )
        count = max(0, room.messages - after)
        room.reads[user_id] = f"{room.epoch}|{seq}|{count}"
        _readers.setdefault((tenant_id, user_id), set()).add(connection_id)
        return ReadMark(True, room.epoch, seq, count)

    async def unread(
        self, *, tenant_id: str, user_id: str, connection_ids: list[str] | None = None
    ) -> list[Unread]:
        if connection_ids is None:
            connection_ids = sorted(_readers.get((tenant_id, user_id), ()))
        result = []
        for cid in connection_ids:
            room = _rooms.get(cid)
            result.append(
                unread_of(
                    cid,
                    epoch=room.epoch if room else None,
                    messages=room.messages if room else 0,
                    mark=room.reads.get(user_id) if room else None,
                )
            )
        return result

    async def record(self, connection_id: str, message_id: str) -> dict[str, str] | None:
        found = _records.get((connection_id, message_id))
        return dict(found) if found is not None else None

    async def records(self, connection_id: str, message_ids: list[str]) -> dict[str, dict]:
        return {
            message_id: dict(_records[(connection_id, message_id)])
            for message_id in message_ids
            if (connection_id, message_id) in _records
        }

    async def find(self, connection_id: str, message_id: str) -> Entry | None:
        room = _rooms.get(connection_id)
        for _, entry in room.log if room is not None else ():
            if entry.id == message_id and entry.frame.startswith(MESSAGE_PREFIX):
                return entry
        return None

    async def first(self, connection_id: str, sent_key: str) -> Appended | None:
        return self._claimed(connection_id, sent_key)

    def _claimed(self, connection_id: str, sent_key: str) -> Appended | None:
        if (first := _sent.get((connection_id, sent_key))) is not None:
            record = first[1]
            return Appended(False, record["acked"], record["seq"], record["frame"], record["state"])
        return None

    async def _sequence(
        self, connection_id: str, sent_key: str, entry_id: str, head: str, tail: str, state=""
    ) -> Appended:
        room = _room(connection_id)
        room.seq += 1
        room.last_id = entry_id = following(room.last_id, entry_id)
        if head.startswith(MESSAGE_PREFIX):
            room.messages += 1
        frame = f'{head}"id":"{entry_id}","seq":{room.seq}{tail}'
        now = _now_ms()
        room.log.append((now, Entry(room.seq, entry_id, frame)))
        self._trim(room.log, now)
        _sent[(connection_id, sent_key)] = (
            time.monotonic() + self.window.sent_ttl_seconds,
            {"acked": False, "seq": room.seq, "frame": frame, "state": state},
        )
        if self.listener is not None and connection_id in self.rooms:
            await self.listener.on_frame(connection_id, room.seq, frame)
        return Appended(True, False, room.seq, frame)

    async def mark_acked(self, *, connection_id: str, sent_key: str) -> None:
        if (entry := _sent.get((connection_id, sent_key))) is not None:
            entry[1]["acked"] = True

    async def tail(self, connection_id: str, since: int | None) -> Tail:
        room = _room(connection_id)
        if since is None or since >= room.seq:
            return Tail(room.epoch, room.seq, [] if since == room.seq else None)
        first_seq = room.seq - len(room.log) + 1
        if not room.log or since < first_seq - 1:
            return Tail(room.epoch, room.seq, None)
        return Tail(room.epoch, room.seq, [entry for _, entry in room.log if entry.seq > since])

    async def recent(self, connection_id: str, *, before: str | None, limit: int) -> list[Entry]:
        room = _rooms.get(connection_id)
        if room is None:
            return []
        older = [
            entry
            for _, entry in room.log
            if (before is None or entry.id < before) and entry.frame.startswith(MESSAGE_PREFIX)
        ]
        return older[-limit:]

    def listen(self, listener: Listener) -> None:
        self.listener = listener

    async def subscribe(self, connection_id: str) -> None:
        self.rooms.add(connection_id)
        if self._reader is None:
            self._loop, self._events = asyncio.get_running_loop(), asyncio.Queue()
            self._reader = asyncio.create_task(self._read_events(), name="room-events")
            _streams.add(self)
        if self.listener is not None:
            asyncio.get_running_loop().call_soon(self.listener.on_subscribed, connection_id)

    async def unsubscribe(self, connection_id: str) -> None:
        self.rooms.discard(connection_id)

    async def publish_event(self, connection_id: str, payload: str) -> None:
        publish_event(connection_id, payload)

    def offer_event(self, connection_id: str, payload: str) -> None:
        if self._loop is None or self._loop.is_closed():
            return
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, (connection_id, payload))
        except RuntimeError:  # the loop closed meanwhile
            pass

    async def _read_events(self) -> None:
        while True:
            connection_id, payload = await self._events.get()
            if self.listener is not None and connection_id in self.rooms:
                try:
                    await self.listener.on_event(connection_id, payload)
                except Exception:
                    logger.exception("room event delivery failed")

    async def close(self) -> None:
        self.rooms.clear()
        _streams.discard(self)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    def _trim(self, log: deque, now: int) -> None:
        window = self.window
        while len(log) > window.keep_messages and (
            len(log) > window.max_messages or now - log[0][0] >= window.keep_seconds * 1000
        ):
            log.popleft()

    @staticmethod
    def _prune_sent() -> None:
        now = time.monotonic()
        while _sent:
            key, (expires, _) = next(iter(_sent.items()))
            if expires > now and len(_sent) <= MAX_SENT:
                break
            del _sent[key]


def forget_everything() -> None:
    """Lose all state, as a restart would (tests)."""
    _rooms.clear()
    _sent.clear()
    _records.clear()
    _readers.clear()
