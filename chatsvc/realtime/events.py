"""Events published to channel-layer groups: rooms, and tenants' sockets.

Every event names its `group`; each process's RoomHub receives it once and
hands it to its local members of that group. Frames are JSON-encoded once by
the publisher, so fan-out costs no per-member encoding.
"""

import json

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


def room_group(connection_id: str) -> str:
    return f"room.{connection_id}"


def tenant_group(tenant_id: str) -> str:
    return f"tenant.{tenant_id}"


def encode(frame: dict) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


async def publish(group: str, event: dict) -> None:
    await get_channel_layer().group_send(group, {**event, "group": group})


async def broadcast(connection_id: str, frame: dict, *, exclude: str | None = None) -> None:
    """Send `frame` to every socket in the room (but the socket whose id is `exclude`)."""
    event = {"type": "chat.frame", "text": encode(frame)}
    if exclude:
        event["exclude"] = exclude
    await publish(room_group(connection_id), event)


def room_closed(connection_id: str) -> None:
    """Members leave the room at once (sync: called from services)."""
    event = {"type": "room.closed", "connection_id": connection_id}
    async_to_sync(publish)(room_group(connection_id), event)


def tenant_disabled(tenant_id: str) -> None:
    """Every socket of the tenant is closed with 4403."""
    async_to_sync(publish)(tenant_group(tenant_id), {"type": "tenant.disabled"})


def key_revoked(tenant_id: str, key_id: str) -> None:
    """Sockets authenticated with tokens of this key are closed with 4401."""
    async_to_sync(publish)(tenant_group(tenant_id), {"type": "key.revoked", "key_id": key_id})


def member_removed(connection_id: str, user_id: str) -> None:
    """The user's sockets leave the room with `left {reason: "removed"}`."""
    event = {"type": "member.removed", "connection_id": connection_id, "user_id": user_id}
    async_to_sync(publish)(room_group(connection_id), event)


def member_muted(connection_id: str, user_id: str, until: float | None) -> None:
    """The user's sockets in the room refuse sends until `until` (None: unmuted)."""
    event = {
        "type": "member.muted",
        "connection_id": connection_id,
        "user_id": user_id,
        "until": until,
    }
    async_to_sync(publish)(room_group(connection_id), event)


def user_revoked(tenant_id: str, user_id: str, revoked_at: float) -> None:
    """The user's sockets whose token was issued at or before `revoked_at` close with 4401."""
    event = {"type": "user.revoked", "user_id": user_id, "revoked_at": revoked_at}
    async_to_sync(publish)(tenant_group(tenant_id), event)


def presence_frame(connection_id: str, user: dict, event: str) -> dict:
    """`presence {connection_id, user {id, name}, event: joined|left}`."""
    return {
        "type": "presence",
        "connection_id": connection_id,
        "user": {"id": user["id"], "name": user["name"]},
        "event": event,
    }


def presence_left(connection_id: str, users: list[dict]) -> None:
    """Members that vanished without leaving (their process died) left (sync callers)."""
    for user in users:
        async_to_sync(broadcast)(connection_id, presence_frame(connection_id, user, "left"))
