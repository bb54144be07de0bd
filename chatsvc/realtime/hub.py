"""RoomHub: the sockets of one process, by room and by tenant.

Room messages and room events come from the room stream (chatsvc.streams):
one subscription per room per process, whatever its number of local members.
Messages are delivered by a RoomFeed in seq order with gaps repaired; events
(typing, presence, a room closed, a member removed or muted) at most once.
Tenant events (a tenant disabled, a key or a user revoked) come from one
channel-layer channel, at most once.
Either way an event is received once per process and its pre-encoded frame
written to each local member: a room message costs one socket write per member.
"""

import asyncio
import logging
from collections import defaultdict

from channels.layers import get_channel_layer

from chatsvc.core.cancellation import raise_if_cancelled
from chatsvc.core.per_loop import PerLoop
from chatsvc.messaging import runtime
from chatsvc.realtime import directory, events
from chatsvc.realtime.feed import RoomFeed
from chatsvc.streams import StreamUnavailable

logger = logging.getLogger(__name__)

SYNC_TIMEOUT_SECONDS = 5  # a join waits this long for a new room's subscription


class RoomHub:
    def __init__(self, layer, stream):
        self.layer = layer
        self.stream = stream
        stream.listen(self)
        self.feeds: dict[str, RoomFeed] = {}
        self.members: dict[str, set] = defaultdict(set)  # channel-layer group -> sockets
        self.channel: str | None = None
        self.reader: asyncio.Task | None = None
        self._setup = asyncio.Lock()

    # --- room streams ----------------------------------------------------------------

    async def open_room(self, member, connection_id: str) -> None:
        """Let `member` hear the room's events from now on (join_room makes it live).

        Returns once the room's subscription is in place, so nothing published
        after this is missed. Raises StreamUnavailable when the room's stream
        cannot be reached; leave_room undoes it either way.
        """
        feed = self.feeds.get(connection_id)
        if feed is None:
            feed = self.feeds[connection_id] = RoomFeed(self.stream, connection_id)
            await self.stream.subscribe(connection_id)
        feed.listeners.add(member)
        try:
            async with asyncio.timeout(SYNC_TIMEOUT_SECONDS):
                await feed.synced.wait()
        except TimeoutError:
            raise StreamUnavailable("the room's stream did not answer in time") from None

    async def join_room(
        self, member, connection_id: str, *, since=None, epoch=None, extra: dict | None = None
    ) -> dict:
        """Make `member` (opened: open_room) live in the room after replaying what it
        missed; returns `joined` (with the `extra` fields: the room's members)."""
        return await self.feeds[connection_id].add(member, since=since, epoch=epoch, extra=extra)

    async def leave_room(self, member, connection_id: str) -> None:
        if (feed := self.feeds.get(connection_id)) is not None:
            feed.remove(member)
            await self._close_if_idle(feed)

    async def _close_if_idle(self, feed: RoomFeed) -> None:
        if feed.idle and self.feeds.get(feed.connection_id) is feed:
            del self.feeds[feed.connection_id]
            await self.stream.unsubscribe(feed.connection_id)

    async def on_frame(self, connection_id: str, seq: int, frame: str) -> None:
        if (feed := self.feeds.get(connection_id)) is not None:
            await feed.offer(seq, frame)

    async def on_event(self, connection_id: str, payload: str) -> None:
        event = events.unpack(payload)
        if event["type"] in events.ROOM_CHANGES:
            # The room's row changed. The directory's own `changed` comes on another
            # channel and may come later: a rejoin must not find the old entry.
            directory.directory().forget("room", connection_id)
        if (feed := self.feeds.get(connection_id)) is None or not feed.listeners:
            return
        try:
            await self._hand(feed.listeners, event)
        except Exception:  # one event's failure must not cost the room's subscription
            logger.exception("room event delivery failed", extra={"connection_id": connection_id})

    def on_subscribed(self, connection_id: str) -> None:
        if (feed := self.feeds.get(connection_id)) is not None:
            feed.sync_soon()

    # --- channel-layer groups ----------------------------------------------------------

    async def join(self, group: str, member) -> None:
        await self.listen()
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

    async def listen(self) -> None:
        """Receive this process's events, directory changes included (before the
        process caches anything: directory.py)."""
        if self.channel is not None:
            return
        async with self._setup:
            if self.channel is None:
                channel = await self.layer.new_channel(prefix="hub.")
                await self.layer.group_add(directory.GROUP, channel)
                self.channel = channel
                self.reader = asyncio.create_task(self._read(), name="room-hub")

    async def _read(self) -> None:
        while True:
            event = await self.layer.receive(self.channel)
            try:
                await self._deliver(event)
            except Exception:
                logger.exception("room event delivery failed", extra={"event": event.get("type")})
            raise_if_cancelled()  # a delivery's Redis call may have swallowed it

    async def _deliver(self, event: dict) -> None:
        if event["type"] == "directory.changed":
            directory.directory().forget(event["kind"], event["id"])
        elif members := self.members.get(event["group"]):
            await self._hand(members, event)

    @staticmethod
    async def _hand(members: set, event: dict) -> None:
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
            elif kind == "member.removed":
                await member.on_member_removed(event["connection_id"], event["user_id"])
            elif kind == "member.muted":
                member.on_member_muted(event["connection_id"], event["user_id"], event["until"])
            elif kind == "user.revoked":
                await member.on_user_revoked(event["user_id"], event["revoked_at"])


_hubs = PerLoop(lambda: RoomHub(get_channel_layer(), runtime.room_stream()))


def hub() -> RoomHub:
    """This event loop's hub."""
    return _hubs.get()
