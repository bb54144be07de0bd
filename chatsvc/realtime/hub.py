"""RoomHub: the sockets of one process, by room, fed by one channel-layer channel.

Each process subscribes once per room it has members in (not once per
socket), receives every room event once, and writes the pre-encoded frame to
its local members directly. Per delivery that costs one socket write; the
per-socket queue, task wake-up, decode and dispatch of the textbook pattern
are gone, and an idle socket holds no channel-layer state at all.
"""

import asyncio
import logging
import weakref
from collections import defaultdict

from channels.layers import get_channel_layer

from chatsvc.realtime.events import room_group

logger = logging.getLogger(__name__)


class RoomHub:
    def __init__(self, layer):
        self.layer = layer
        self.members: dict[str, set] = defaultdict(set)
        self.channel: str | None = None
        self.reader: asyncio.Task | None = None
        self._setup = asyncio.Lock()

    async def join(self, connection_id: str, member) -> None:
        await self._ensure_channel()
        members = self.members[connection_id]
        members.add(member)
        if len(members) == 1:
            await self.layer.group_add(room_group(connection_id), self.channel)

    async def leave(self, connection_id: str, member) -> None:
        members = self.members.get(connection_id)
        if members is None or member not in members:
            return
        members.discard(member)
        if not members:
            del self.members[connection_id]
            await self.layer.group_discard(room_group(connection_id), self.channel)

    async def _ensure_channel(self) -> None:
        async with self._setup:
            if self.channel is None:
                self.channel = await self.layer.new_channel(prefix="hub.")
                self.reader = asyncio.create_task(self._read(), name="room-hub")

    async def _read(self) -> None:
        while True:
            event = await self.layer.receive(self.channel)
            try:
                await self._deliver(event)
            except Exception:
                logger.exception("room event delivery failed", extra={"event": event.get("type")})

    async def _deliver(self, event: dict) -> None:
        members = self.members.get(event["connection_id"])
        if not members:
            return
        if event["type"] == "chat.frame":
            text, exclude = event["text"], event.get("exclude")
            for member in list(members):
                if member.socket_id != exclude:
                    await member.send_text(text)
        elif event["type"] == "room.closed":
            for member in list(members):
                await member.on_room_closed(event["connection_id"])


_hubs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def hub() -> RoomHub:
    """This event loop's hub (a server has one loop; tests have many)."""
    loop = asyncio.get_running_loop()
    current = _hubs.get(loop)
    if current is None:
        current = _hubs[loop] = RoomHub(get_channel_layer())
    return current
