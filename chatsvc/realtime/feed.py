"""RoomFeed: one room's stream in one process, delivered to its local sockets.

The feed knows the last `seq` it delivered. Frames are handed to members
strictly in seq order, each once: a duplicate is dropped, a frame past a gap
waits while the gap is filled from the room's replay log (`repair`). When
the log cannot fill it (the epoch changed: Redis lost its data; or the gap
is older than the window), every member is told `left {reason: "resync"}`
and rejoins with `since`. The lock orders deliveries against joins, so a
joining socket gets its replay, then `joined`, then live frames, with no gap
and no repeat.
"""

import asyncio
import logging

from chatsvc.core.cancellation import raise_if_cancelled
from chatsvc.realtime.events import encode
from chatsvc.streams import StreamUnavailable

logger = logging.getLogger(__name__)

MAX_WAITING = 10_000  # frames held behind a gap before the feed gives up and resyncs


class RoomFeed:
    def __init__(self, stream, connection_id: str):
        self.stream = stream
        self.connection_id = connection_id
        self.epoch: str | None = None
        self.seq: int | None = None  # None until the first sync
        self.members: set = set()  # live: they get every frame from here on
        self.listeners: set = set()  # they hear room events: members and sockets joining
        self.waiting: dict[int, str] = {}  # seq -> frame, not yet deliverable
        self.lock = asyncio.Lock()
        self.synced = asyncio.Event()
        self._sync_task: asyncio.Task | None = None
        self._sync_again = False

    @property
    def idle(self) -> bool:
        return not self.listeners

    async def offer(self, seq: int, frame: str) -> None:
        """A frame from the subscription."""
        if self.seq is not None and seq <= self.seq:
            return
        self.waiting[seq] = frame
        if self.seq is None:
            return  # the first sync delivers it
        await self._advance()
        if self.waiting:
            self.sync_soon()  # a gap: something published was not received

    def sync_soon(self) -> None:
        """Compare with the stream and deliver what this process lacks (in the background)."""
        if self._sync_task is None or self._sync_task.done():
            self._sync_task = asyncio.create_task(
                self._sync(), name=f"feed-sync-{self.connection_id}"
            )
        else:
            self._sync_again = True

    async def _sync(self) -> None:
        backoff = 0.05
        while True:
            raise_if_cancelled()  # a member's write or a Redis read may have swallowed it
            self._sync_again = False
            try:
                tail = await self.stream.tail(self.connection_id, self.seq)
            except StreamUnavailable:
                if self.idle:
                    return
                await asyncio.sleep(backoff)
                backoff = min(2 * backoff, 2.0)
                continue
            await self._catch_up(tail)
            if self.waiting and not self.idle:
                await asyncio.sleep(0.1)  # frames past a gap: the rest may still be in flight
            elif not self._sync_again:
                return

    async def _catch_up(self, tail) -> None:
        if self.seq is None:  # first sync: start at the room's current seq
            self.epoch, self.seq = tail.epoch, tail.seq
            self.waiting = {s: f for s, f in self.waiting.items() if s > tail.seq}
            self.synced.set()
        elif tail.epoch != self.epoch or tail.entries is None:
            await self._resync(tail)
            return
        else:
            for entry in tail.entries:
                if entry.seq > self.seq:
                    self.waiting.setdefault(entry.seq, entry.frame)
        await self._advance()
        if self.waiting and (len(self.waiting) > MAX_WAITING or min(self.waiting) <= tail.seq):
            # Behind a gap the log no longer covers.
            await self._resync(tail)

    async def _advance(self) -> None:
        async with self.lock:
            while (frame := self.waiting.pop(self.seq + 1, None)) is not None:
                self.seq += 1
                for member in list(self.members):
                    await member.send_text(frame)

    async def _resync(self, tail) -> None:
        logger.warning(
            "room stream cannot be repaired; members resync",
            extra={"connection_id": self.connection_id, "epoch": tail.epoch, "seq": tail.seq},
        )
        async with self.lock:
            members, self.members = list(self.members), set()
            self.epoch, self.seq = tail.epoch, tail.seq
            self.waiting = {s: f for s, f in self.waiting.items() if s > tail.seq}
        for member in members:
            await member.on_resync(self.connection_id)

    async def add(
        self, member, *, since: int | None, epoch: str | None, extra: dict | None = None
    ) -> dict:
        """Replay what `member` missed after `since`, then make it live; returns `joined`
        (with the `extra` fields)."""
        fetched: dict[int, str] = {}
        recovered = since is not None and epoch == self.epoch and since <= self.seq
        upto = since
        while True:
            if recovered and upto < self.seq:
                tail = await self.stream.tail(self.connection_id, upto)
                if tail.epoch != epoch or tail.entries is None:
                    recovered = False
                else:
                    fetched.update((entry.seq, entry.frame) for entry in tail.entries)
                    upto = max(upto, tail.seq)
            async with self.lock:
                # A resync while we read changes the epoch: then nothing is replayed.
                recovered = recovered and self.epoch == epoch
                if recovered and upto < self.seq:
                    continue  # the feed moved on while we read: read the rest
                if recovered:
                    for seq in range(since + 1, self.seq + 1):
                        await member.send_text(fetched[seq])
                self.members.add(member)
                joined = {
                    "type": "joined",
                    "connection_id": self.connection_id,
                    "seq": self.seq,
                    "epoch": self.epoch,
                }
                if since is not None:
                    joined["recovered"] = recovered
                joined.update(extra or {})
                await member.send_text(encode(joined))
                return joined

    def remove(self, member) -> None:
        self.members.discard(member)
        self.listeners.discard(member)
