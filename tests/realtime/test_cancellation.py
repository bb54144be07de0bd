"""A cancelled hub stops, even when Python 3.11 swallows the cancellation.

`asyncio.wait_for` in 3.11 returns the result instead of raising when the task
is cancelled in the same turn as the awaited operation completes; redis-py
wraps socket writes in it. The hub's reader must still stop (a hung reader
hung the event loop's shutdown: chatsvc.core.cancellation).
"""

import asyncio

from channels.layers import InMemoryChannelLayer

from chatsvc.realtime.hub import RoomHub
from chatsvc.streams import Window
from chatsvc.streams.memory_stream import MemoryRoomStream


class SlowWriter:
    """A member whose write ends in a `wait_for`, like a Redis command's."""

    socket_id = "s1"

    def __init__(self):
        self.written = asyncio.get_running_loop().create_future()
        self.sent = []

    async def send_text(self, text):
        self.sent.append(text)
        await asyncio.wait_for(self.written, 5)


async def test_the_hub_reader_stops_when_a_delivery_swallows_its_cancellation():
    layer = InMemoryChannelLayer()
    window = Window(keep_messages=10, keep_seconds=60, max_messages=10, sent_ttl_seconds=60)
    hub = RoomHub(layer, MemoryRoomStream(window=window))
    member = SlowWriter()
    await hub.join("tenant.x", member)
    await layer.group_send("tenant.x", {"type": "chat.frame", "group": "tenant.x", "text": "hi"})
    while not member.sent:
        await asyncio.sleep(0.01)

    # Cancel in the turn the write completes: 3.11's wait_for then returns normally.
    member.written.set_result(None)
    hub.reader.cancel()
    done, _ = await asyncio.wait([hub.reader], timeout=2)
    assert done and hub.reader.cancelled()
