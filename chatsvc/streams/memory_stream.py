"""The room stream in one process (local mode, no Redis): the same contract as Redis.

State is process-wide, like Redis's: a restart loses it, and the next
message starts a new epoch above every earlier seq.
"""

import asyncio
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from chatsvc.core.ulid import following
from chatsvc.streams import Appended, Entry, Listener, Tail, Window, new_epoch


@dataclass
class _Room:
    epoch: str
    seq: int
    last_id: str = ""
    log: deque = field(default_factory=deque)  # (ms, Entry)


_rooms: dict[str, _Room] = {}
_sent: OrderedDict[tuple[str, str], tuple[float, dict]] = OrderedDict()
MAX_SENT = 200_000


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


class MemoryRoomStream:
    def __init__(self, *, window: Window):
        self.window = window
        self.listener: Listener | None = None
        self.rooms: set[str] = set()

    async def append(
        self, *, connection_id: str, sent_key: str, message_id: str, head: str, tail: str
    ) -> Appended:
        self._prune_sent()
        key = (connection_id, sent_key)
        if (first := _sent.get(key)) is not None:
            record = first[1]
            return Appended(False, record["acked"], record["seq"], record["frame"])
        room = _room(connection_id)
        room.seq += 1
        room.last_id = message_id = following(room.last_id, message_id)
        frame = f'{head}"id":"{message_id}","seq":{room.seq}{tail}'
        now = _now_ms()
        room.log.append((now, Entry(room.seq, message_id, frame)))
        self._trim(room.log, now)
        _sent[key] = (
            time.monotonic() + self.window.sent_ttl_seconds,
            {"acked": False, "seq": room.seq, "frame": frame},
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
        older = [entry for _, entry in room.log if before is None or entry.id < before]
        return older[-limit:]

    def listen(self, listener: Listener) -> None:
        self.listener = listener

    async def subscribe(self, connection_id: str) -> None:
        self.rooms.add(connection_id)
        if self.listener is not None:
            asyncio.get_running_loop().call_soon(self.listener.on_subscribed, connection_id)

    async def unsubscribe(self, connection_id: str) -> None:
        self.rooms.discard(connection_id)

    async def close(self) -> None:
        self.rooms.clear()

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
