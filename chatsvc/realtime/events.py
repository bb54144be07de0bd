"""Events published to a room's channel-layer group, and the frames they carry.

Frames are JSON-encoded once by the publisher; every consumer in every
process forwards the same text, so fan-out costs no per-member encoding.
"""

import json

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


def room_group(connection_id: str) -> str:
    return f"room.{connection_id}"


def encode(frame: dict) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


async def broadcast(connection_id: str, frame: dict, *, exclude: str | None = None) -> None:
    """Send `frame` to every socket in the room (but the socket whose id is `exclude`)."""
    event = {"type": "chat.frame", "connection_id": connection_id, "text": encode(frame)}
    if exclude:
        event["exclude"] = exclude
    await get_channel_layer().group_send(room_group(connection_id), event)


async def room_closed(connection_id: str) -> None:
    await get_channel_layer().group_send(
        room_group(connection_id), {"type": "room.closed", "connection_id": connection_id}
    )


def room_closed_sync(connection_id: str) -> None:
    async_to_sync(room_closed)(connection_id)
