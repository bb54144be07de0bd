"""Moderation: mute, unmute, kick, ban and unban a user in a room.

Moderators do it over WebSocket (`moderate`), the tenant's backend over REST.
Mutes and bans are rows in PostgreSQL (RoomMute, RoomRemoval): they outlive
sockets, the admin shows and lifts them, and their model signals tell every
web process's live sockets (chatsvc.realtime.revocation). A kick only makes
the user's sockets leave. Every action is also a `moderation` event on the
room's sequence, so members see it live and on resume, and the worker keeps
it in DynamoDB.
"""

import json
from datetime import UTC, datetime, timedelta

from channels.db import database_sync_to_async
from django.utils import timezone

from chatsvc.core.ulid import new_ulid
from chatsvc.messaging import runtime
from chatsvc.messaging.content import (
    Actor,
    ContentError,
    Done,
    change_key,
    event_head,
    expires_at_of,
    queue_change,
    resent,
)
from chatsvc.messaging.queue_message import utc_timestamp
from chatsvc.realtime import events
from chatsvc.realtime.protocol import ACTIONS
from chatsvc.rooms import services
from chatsvc.rooms.models import Room, RoomMute, RoomRemoval

PAST = {
    "mute": "muted",
    "unmute": "unmuted",
    "kick": "kicked",
    "ban": "banned",
    "unban": "unbanned",
}


async def moderate(
    *,
    actor: Actor,
    connection_id: str,
    action: str,
    user_id: str,
    client_id: str,
    seconds: int | None = None,
    reason: str = "",
) -> Done:
    """Apply `action` to `user_id` in the room and post the `moderation` event.

    The caller checked the room is the actor's tenant's and validated the
    fields (chatsvc.realtime.protocol bounds them). Raises ContentError for
    what the rules refuse.
    """
    if action not in ACTIONS:
        raise ContentError("bad_frame", f"action must be one of {', '.join(ACTIONS)}")
    if not actor.moderator:
        raise ContentError("forbidden", "only moderators can moderate")
    if actor.id is not None and actor.id == user_id:
        raise ContentError("bad_frame", "moderators cannot moderate themselves")
    producer = runtime.producer()
    with producer.admission():
        stream = runtime.room_stream()
        key = change_key(actor, connection_id, "moderation", client_id)
        if (first := await stream.first(connection_id, key)) is not None:
            return await resent(producer, stream, actor, connection_id, key, first)
        until = await _record(actor, connection_id, action, user_id, seconds, reason)
        if action == "kick":
            await events.remove_member(connection_id, user_id)
        now = datetime.now(UTC)
        frame = {
            "action": PAST[action],
            "user": {"id": user_id},
            "by": actor.public(),
            "until": utc_timestamp(until) if until else None,
            "reason": reason or None,
            "ts": utc_timestamp(now),
        }
        appended = await stream.append(
            connection_id=connection_id,
            sent_key=key,
            message_id=new_ulid(),
            head=event_head("moderation", connection_id),
            tail="," + json.dumps(frame, separators=(",", ":"), ensure_ascii=False)[1:],
        )
        if not appended.new:  # a resend that raced its first attempt
            return await resent(producer, stream, actor, connection_id, key, appended)
        # Kept as long as a message posted now.
        return await queue_change(
            producer,
            stream,
            actor,
            key,
            appended,
            state={},
            expires_at=expires_at_of(actor.tenant, frame["ts"]),
        )


@database_sync_to_async
def _record(actor: Actor, connection_id: str, action: str, user_id: str, seconds, reason: str):
    """Write the mute or ban (its model signal tells the live sockets); its end, if any."""
    room = Room.objects.get(pk=connection_id)
    by = actor.id or ""
    until = timezone.now() + timedelta(seconds=seconds) if seconds else None
    if action == "mute":
        RoomMute.objects.update_or_create(
            room=room,
            user_id=user_id,
            defaults={"until": until, "muted_at": timezone.now(), "muted_by": by, "reason": reason},
        )
    elif action == "unmute":
        for mute in RoomMute.objects.filter(room=room, user_id=user_id):
            mute.delete()
    elif action in ("ban", "unban"):
        current = RoomRemoval.objects.filter(room=room, user_id=user_id).first()
        if current is not None and not current.by_moderator and not actor.backend:
            # The LMS removed the user (e.g. unenrolled): moderators cannot undo or shorten it.
            raise ContentError(
                "forbidden", "the tenant removed this user from the room; only the tenant re-admits"
            )
        if action == "ban":
            services.remove_member(
                room=room,
                user_id=user_id,
                until=until,
                by=by,
                reason=reason,
                by_moderator=not actor.backend,
            )
        else:
            services.readmit_member(room=room, user_id=user_id)
    return until
