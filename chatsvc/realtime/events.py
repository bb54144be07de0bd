"""Events for the sockets of a room or of a tenant, in every process.

Room events (frames such as typing, presence and receipts; a room closed, a
member removed or muted) travel on the room's own stream subscription
(chatsvc.streams.publish_event), which every process holding a member of the
room has anyway: joining a room costs no second subscription. Tenant events
(disabled, key or user revoked) go to a channel-layer group per tenant.
Either way each process's RoomHub receives an event once and hands it to its
local sockets; frames are JSON-encoded once by the publisher, so fan-out costs
no per-member encoding. Both are at most once: a process whose subscription is
being restored misses what is published meanwhile.
"""

import json

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from chatsvc.messaging import runtime

FRAME = "~"  # "~<socket id to skip>|<frame>": a frame for the room's sockets
CONTROL = "!"  # "!<event JSON>": something the room's sockets act on
ROOM_CHANGES = frozenset({"room.closed", "member.removed", "member.muted"})  # of the room's row


def tenant_group(tenant_id: str) -> str:
    return f"tenant.{tenant_id}"


def encode(frame: dict) -> str:
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def unpack(payload: str) -> dict:
    """A room event from its payload: a frame is `{type: chat.frame, text, exclude}`."""
    if payload.startswith(FRAME):
        exclude, text = payload[1:].split("|", 1)
        return {"type": "chat.frame", "text": text, "exclude": exclude or None}
    return json.loads(payload[1:])


def _frame_payload(frame: dict, exclude: str | None = None) -> str:
    return f"{FRAME}{exclude or ''}|{encode(frame)}"


def _control_payload(event: dict) -> str:
    return CONTROL + encode(event)


async def publish(group: str, event: dict) -> None:
    await get_channel_layer().group_send(group, {**event, "group": group})


async def broadcast(connection_id: str, frame: dict, *, exclude: str | None = None) -> None:
    """Send `frame` to every socket in the room (but the socket whose id is `exclude`)."""
    await runtime.room_stream().publish_event(connection_id, _frame_payload(frame, exclude))


def room_closed(connection_id: str) -> None:
    """Members leave the room at once (sync: called from services)."""
    event = {"type": "room.closed", "connection_id": connection_id}
    runtime.publish_room_event(connection_id, _control_payload(event))


def _removed(connection_id: str, user_id: str) -> dict:
    return {"type": "member.removed", "connection_id": connection_id, "user_id": user_id}


def member_removed(connection_id: str, user_id: str) -> None:
    """The user's sockets leave the room with `left {reason: "removed"}`."""
    runtime.publish_room_event(connection_id, _control_payload(_removed(connection_id, user_id)))


async def remove_member(connection_id: str, user_id: str) -> None:
    """member_removed, for async callers."""
    payload = _control_payload(_removed(connection_id, user_id))
    await runtime.room_stream().publish_event(connection_id, payload)


def member_muted(connection_id: str, user_id: str, until: float | None) -> None:
    """The user's sockets in the room refuse sends until `until` (None: unmuted)."""
    event = {
        "type": "member.muted",
        "connection_id": connection_id,
        "user_id": user_id,
        "until": until,
    }
    runtime.publish_room_event(connection_id, _control_payload(event))


def tenant_disabled(tenant_id: str) -> None:
    """Every socket of the tenant is closed with 4403."""
    async_to_sync(publish)(tenant_group(tenant_id), {"type": "tenant.disabled"})


def key_revoked(tenant_id: str, key_id: str) -> None:
    """Sockets authenticated with tokens of this key are closed with 4401."""
    async_to_sync(publish)(tenant_group(tenant_id), {"type": "key.revoked", "key_id": key_id})


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
        frame = presence_frame(connection_id, user, "left")
        runtime.publish_room_event(connection_id, _frame_payload(frame))
