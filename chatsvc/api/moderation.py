"""REST API v1: moderation by the tenant's backend (chatsvc.rooms.moderation).

Registered on the API in chatsvc.api.views. The backend acts as a moderator:
it deletes any message, and mutes, kicks, bans and lifts mutes and bans. Each
action is a content event on the room's sequence, as if a moderator had
sent it over WebSocket; `by` names the LMS user it acts for, if any.
"""

from datetime import datetime
from typing import Literal

from asgiref.sync import async_to_sync
from django.utils import timezone
from ninja import Field, Router, Schema

from chatsvc.api.errors import ApiError
from chatsvc.api.membership import ROOM_ERRORS, RoomId, tenant_room
from chatsvc.api.schemas import ErrorOut
from chatsvc.core.text import is_storable
from chatsvc.core.ulid import is_ulid, new_ulid
from chatsvc.messaging import content
from chatsvc.messaging.producer import EnqueueFailed, QueueBusy
from chatsvc.realtime.protocol import ACTIONS, MAX_REASON_CHARS, MAX_SECONDS, MAX_USER_ID
from chatsvc.rooms import moderation
from chatsvc.rooms.models import RoomMute, RoomRemoval
from chatsvc.streams import REDIS_OUTAGES, StreamUnavailable

router = Router(tags=["moderation"])

CHANGE_ERRORS = {403: ErrorOut, 409: ErrorOut, 503: ErrorOut, **ROOM_ERRORS}
# ContentError codes -> HTTP status.
STATUS = {
    "message_not_found": 404,
    "message_deleted": 409,
    "busy": 409,
    "forbidden": 403,
    "bad_frame": 422,
}


class ActingUser(Schema):
    id: str = Field(min_length=1, max_length=MAX_USER_ID)
    name: str = Field(min_length=1, max_length=200)


class ModerationIn(Schema):
    action: Literal[ACTIONS] = Field(  # type: ignore[valid-type]
        description="`mute` (needs `seconds`), `unmute`, `kick` (leave now, may rejoin), "
        "`ban` (leave and cannot rejoin; for `seconds`, or until `unban`), `unban`."
    )
    user_id: str = Field(min_length=1, max_length=MAX_USER_ID, description="The user's `sub`.")
    seconds: int | None = Field(None, ge=1, le=MAX_SECONDS)
    reason: str = Field("", max_length=MAX_REASON_CHARS, description="Shown to the room.")
    by: ActingUser | None = Field(
        None, description="The LMS user this action is taken for; shown as the event's `by`."
    )


class ContentEventOut(Schema):
    id: str = Field(description="The event's id.")
    seq: int = Field(description="The event's place in the room's sequence.")
    ts: str


class MuteOut(Schema):
    user_id: str
    until: datetime
    by: str = Field(description="The moderator's user id; empty: your API.")
    reason: str


class BanOut(Schema):
    user_id: str
    until: datetime | None = Field(description="Empty: until lifted.")
    by: str
    reason: str


class ModerationStateOut(Schema):
    connection_id: str
    mutes: list[MuteOut]
    bans: list[BanOut] = Field(description="Bans and removals in force.")


@router.delete(
    "/connections/{connection_id}/messages/{message_id}",
    response={200: ContentEventOut, **CHANGE_ERRORS},
    summary="Delete a message",
)
def delete_message(request, connection_id: RoomId, message_id: str):
    """Deletes any message of the room, as a moderator: members see
    `message_deleted {moderated: true}` live, history keeps a tombstone
    without the body, and the worker removes the body (and attachments)
    from storage. Retrying after a 503 is safe (it answers the same event);
    deleting a message someone else deleted is a 409."""
    room = tenant_room(request, connection_id)
    if not is_ulid(message_id):
        raise ApiError(404, "message_not_found", "no such message in this room")
    actor = content.Actor(request.auth, None, None, moderator=True, backend=True)
    return _run(
        content.delete_message,
        actor=actor,
        connection_id=room.connection_id,
        # One deletion per message: retrying after a 503 queues the first one again.
        client_id=f"api:{message_id}",
        message_id=message_id,
    )


@router.post(
    "/connections/{connection_id}/moderation",
    response={200: ContentEventOut, **CHANGE_ERRORS},
    summary="Mute, kick or ban a user, or lift a mute or ban",
)
def moderate(request, connection_id: RoomId, payload: ModerationIn):
    """Takes effect at once in every server: a muted user's sends, edits,
    reactions and typing are refused with `error muted`; a kicked or banned
    user's sockets leave the room (`left {reason: "removed"}`), and a banned
    one cannot rejoin (`error removed`) until the ban ends or is lifted. The
    room sees a `moderation` event. The user need not be online. Send an
    `Idempotency-Key` header to retry safely after a 503. Moderators cannot
    lift or shorten your removals; you can lift theirs."""
    room = tenant_room(request, connection_id)
    if (payload.action == "mute") != (payload.seconds is not None) and payload.action != "ban":
        message = "'mute' needs 'seconds'; only 'mute' and 'ban' take it"
        raise ApiError(422, "invalid_request", message)
    by = payload.by
    texts = [payload.user_id, payload.reason, *((by.id, by.name) if by else ())]
    if not all(map(is_storable, texts)):
        raise ApiError(422, "invalid_request", "text must not contain control characters")
    actor = content.Actor(
        request.auth, by.id if by else None, by.name if by else None, True, backend=True
    )
    return _run(
        moderation.moderate,
        actor=actor,
        connection_id=room.connection_id,
        client_id=_idempotency_key(request),
        action=payload.action,
        user_id=payload.user_id,
        seconds=payload.seconds,
        reason=payload.reason,
    )


@router.get(
    "/connections/{connection_id}/moderation",
    response={200: ModerationStateOut, **ROOM_ERRORS},
    summary="List a room's mutes and bans in force",
)
def list_moderation(request, connection_id: RoomId):
    """The mutes and bans (including removals) now in force in the room."""
    room = tenant_room(request, connection_id)
    mutes = RoomMute.objects.filter(room=room, until__gt=timezone.now())
    bans = RoomRemoval.objects.filter(room=room).exclude(until__lte=timezone.now())
    return {
        "connection_id": room.connection_id,
        "mutes": [
            {"user_id": m.user_id, "until": m.until, "by": m.muted_by, "reason": m.reason}
            for m in mutes
        ],
        "bans": [
            {"user_id": b.user_id, "until": b.until, "by": b.removed_by, "reason": b.reason}
            for b in bans
        ],
    }


def _idempotency_key(request) -> str:
    """`Idempotency-Key` (1-64 plain characters): a retry with the same key gets the
    first attempt's event and changes nothing twice. Without one, every call acts."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return new_ulid()
    if not 0 < len(key) <= 64 or not is_storable(key):
        raise ApiError(422, "invalid_request", "Idempotency-Key must be 1 to 64 plain characters")
    return "key:" + key


def _run(change, **arguments) -> dict:
    try:
        done = async_to_sync(change)(**arguments)
    except content.ContentError as refused:
        raise ApiError(STATUS.get(refused.code, 422), refused.code, refused.message) from None
    except QueueBusy:
        raise ApiError(503, "overloaded", "the server is busy; retry later") from None
    except EnqueueFailed:
        raise ApiError(503, "not_stored", "not stored yet; retry") from None
    except (StreamUnavailable, *REDIS_OUTAGES):
        raise ApiError(503, "unavailable", "temporarily unavailable; retry") from None
    return {"id": done.id, "seq": done.seq, "ts": done.ts}
