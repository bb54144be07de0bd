"""RoomHub: the sockets of one process, by group, fed by one channel-layer channel.

Each process subscribes once per group (a room, or a tenant's sockets) it has
members in, not once per socket; it receives every event once and hands it to
its local members directly: a room message costs one socket write per member.
The per-socket queue, task wake-up, decode and dispatch of the textbook
pattern are gone, and an idle socket holds no channel-layer state at all.
"""

import asyncio
import logging
from collections import defaultdict

from channels.layers import get_channel_layer

from chatsvc.core.per_loop import PerLoop

logger = logging.getLogger(__name__)


class RoomHub:
    def __init__(self, layer):
        self.layer = layer
        self.members: dict[str, set] = defaultdict(set)
        self.channel: str | None = None
        self.reader: asyncio.Task | None = None
        self._setup = asyncio.Lock()

    async def join(self, group: str, member) -> None:
        await self._ensure_channel()
        if not self.members.get(group):
            await self.layer.group_add(group, self.channel)
        self.members[group].add(member)

    async def leave(self, group: str, member) -> None:
        members = self.members.get(group)
        if members is None or member not in members:
            return
        members.discard(member)
        if not members:
            del self.members[group]
            await self.layer.group_discard(group, self.channel)

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
        members = self.members.get(event["group"])
        if not members:
            return
        kind = event["type"]
        if kind == "chat.frame":
            text, exclude = event["text"], event.get("exclude")
            for member in list(members):
                if member.socket_id != exclude:
                    await member.send_text(text)
            return
        for member in list(members):
            if kind == "room.closed":
                await member.on_room_closed(event["connection_id"])
            elif kind == "tenant.disabled":
                await member.on_tenant_disabled()
            elif kind == "key.revoked":
                await member.on_key_revoked(event["key_id"])


_hubs = PerLoop(lambda: RoomHub(get_channel_layer()))


def hub() -> RoomHub:
    """This event loop's hub."""
    return _hubs.get()
