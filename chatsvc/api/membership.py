"""REST API v1: who is in a room, removing a user from a room, revoking a user.

Registered on the API in chatsvc.api.views (`api.add_router("", membership_router)`).
Rooms are scoped by tenant: another tenant's room is a 404, like a missing
one. User ids are the token subjects (`sub`) of the tenant's users; they
need not have connected ever (a removal or revocation may come first).
"""

from datetime import datetime
from typing import Annotated, Literal

from django.http import Http404
from ninja import Field, Path, Query, Router, Schema

from chatsvc.api.errors import ApiError
from chatsvc.api.schemas import ErrorOut
from chatsvc.core.text import is_storable
from chatsvc.realtime import presence
from chatsvc.rooms import selectors, services
from chatsvc.rooms.models import Room
from chatsvc.streams import REDIS_OUTAGES

router = Router(tags=["members"])

ROOM_ERRORS = {401: ErrorOut, 404: ErrorOut, 422: ErrorOut, 429: ErrorOut}

RoomId = Annotated[
    str,
    Path(
        description="A ConnectionId of yours (a ULID). Another tenant's room is a 404, "
        "like a missing one."
    ),
]
UserId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=128,
        description="The user's id: the `sub` of their tokens (1-128 characters).",
    ),
]


class MemberOut(Schema):
    id: str
    name: str
    role: Literal["member", "moderator"]


class MembersOut(Schema):
    connection_id: str
    members: list[MemberOut] = Field(
        description="Users with at least one socket in the room, first joined first, "
        "each once however many sockets they have."
    )
    member_count: int = Field(description="Every member, also those past `limit`.")


class MembersQuery(Schema):
    limit: int = Field(100, ge=1, le=1000, description="At most this many members (1-1000).")


class MembershipOut(Schema):
    connection_id: str
    user_id: str
    status: Literal["removed", "admitted"] = Field(
        description="`removed`: the user cannot join the room; `admitted`: they may "
        "(if their token lists the room)."
    )
    removed_at: datetime | None = None


class RevocationOut(Schema):
    user_id: str
    revoked_at: datetime = Field(
        description="Tokens of the user issued (`iat`) at or before this second are refused."
    )


def tenant_room(request, connection_id: str) -> Room:
    room = selectors.room_of_tenant(tenant_id=request.auth.id, connection_id=connection_id)
    if room is None:  # another tenant's room is as absent as a missing one
        raise Http404
    return room


def checked_user_id(user_id: str) -> str:
    if not is_storable(user_id):
        detail = {
            "loc": ["path", "user_id"],
            "msg": "must not contain control characters or lone surrogates",
            "type": "value_error",
        }
        raise ApiError(422, "invalid_request", "request validation failed", [detail])
    return user_id


@router.get(
    "/connections/{connection_id}/members",
    response={200: MembersOut, 503: ErrorOut, **ROOM_ERRORS},
    summary="Who is in a room",
)
def list_members(request, connection_id: RoomId, query: Query[MembersQuery]):
    """The users connected to the room right now, each once (`{id, name, role}`
    from their latest token), first joined first, at most `limit`;
    `member_count` counts them all. The same list a joining socket gets in
    `joined.members`. A socket of a server that died stays listed for at most
    3 x CHAT_REVALIDATE_SECONDS (90 s). 503 `unavailable` when Redis cannot
    be read: retry."""
    room = tenant_room(request, connection_id)
    try:
        found = presence.members_blocking(room.connection_id, limit=query.limit)
    except REDIS_OUTAGES as exc:
        raise ApiError(503, "unavailable", "presence cannot be read right now; retry") from exc
    return {"connection_id": room.connection_id, **found.fields()}


@router.delete(
    "/connections/{connection_id}/members/{path:user_id}",
    response={200: MembershipOut, **ROOM_ERRORS},
    summary="Remove a user from a room",
)
def remove_member(request, connection_id: RoomId, user_id: UserId):
    """The user's live sockets leave the room at once, in every server, with
    `left {reason: "removed"}`, and the user cannot join it again (`error
    removed`), whatever their tokens say, until re-admitted with `PUT`. The
    user need not be online. Removing twice is harmless: the first removal's
    time is kept."""
    room = tenant_room(request, connection_id)
    removal = services.remove_member(room=room, user_id=checked_user_id(user_id))
    return _membership(room, removal.user_id, removal.removed_at)


@router.put(
    "/connections/{connection_id}/members/{path:user_id}",
    response={200: MembershipOut, **ROOM_ERRORS},
    summary="Re-admit a user to a room",
)
def readmit_member(request, connection_id: RoomId, user_id: UserId):
    """Lifts a removal: the user may join the room again with any valid token
    that lists it. Admitting a user who was never removed is harmless."""
    room = tenant_room(request, connection_id)
    services.readmit_member(room=room, user_id=checked_user_id(user_id))
    return _membership(room, user_id, None)


@router.post(
    "/users/{path:user_id}/revoke",
    response={200: RevocationOut, 401: ErrorOut, 422: ErrorOut, 429: ErrorOut},
    summary="Revoke every session of a user",
)
def revoke_user(request, user_id: UserId):
    """Every token of this user of yours issued (`iat`) at or before now is
    refused (close 4401 at `auth`), and the user's live sockets are closed
    with 4401 at once, in every server. Tokens minted from the next second
    on work. Calling it again revokes the tokens minted in between."""
    revocation = services.revoke_user(tenant=request.auth, user_id=checked_user_id(user_id))
    return {"user_id": revocation.user_id, "revoked_at": revocation.revoked_at}


def _membership(room: Room, user_id: str, removed_at: datetime | None) -> dict:
    return {
        "connection_id": room.connection_id,
        "user_id": user_id,
        "status": "removed" if removed_at is not None else "admitted",
        "removed_at": removed_at,
    }
