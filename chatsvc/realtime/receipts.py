"""Read positions of one socket: coalesced writes, throttled receipts.

`read {connection_id, seq}` frames only note the highest seq per room; every
CHAT_READ_COALESCE_SECONDS at most, the socket writes each room's new
position to the room stream once (chatsvc.streams: `mark_read`) and tells
the room's other sockets with one `read {connection_id, user, seq}` receipt.
A client may send `read` as often as it likes: a room costs one write and one
receipt per interval, however many frames.
"""

import asyncio
import logging

from django.conf import settings

from chatsvc.messaging import runtime
from chatsvc.realtime import events
from chatsvc.streams import REDIS_OUTAGES, StreamUnavailable

logger = logging.getLogger(__name__)


class ReadPositions:
    __slots__ = ("consumer", "pending", "timer")  # one per socket

    def __init__(self, consumer):
        self.consumer = consumer
        self.pending: dict[str, int] = {}  # connection_id -> highest seq read, not yet written
        self.timer: asyncio.TimerHandle | None = None

    def note(self, connection_id: str, seq: int) -> None:
        if seq > self.pending.get(connection_id, -1):
            self.pending[connection_id] = seq
        if self.timer is None:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(settings.CHAT_READ_COALESCE_SECONDS, self._flush_soon)

    def _flush_soon(self) -> None:
        self.timer = None
        self.consumer._in_background(self.flush())

    async def flush(self) -> None:
        """Write what is pending (also on disconnect)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        pending, self.pending = self.pending, {}
        user = self.consumer.user
        for connection_id, seq in pending.items():
            try:
                mark = await runtime.room_stream().mark_read(
                    connection_id, tenant_id=user.tenant.id, user_id=user.id, seq=seq
                )
            except (StreamUnavailable, *REDIS_OUTAGES) as exc:
                # A read position is a hint: the next `read` writes it.
                logger.warning("read position not written", extra={"error": str(exc)})
                continue
            if mark.moved:
                receipt = {
                    "type": "read",
                    "connection_id": connection_id,
                    "user": user.public(),
                    "seq": mark.seq,
                }
                await events.broadcast(connection_id, receipt, exclude=self.consumer.socket_id)
