"""REST API v1: a user's unread counts, for an LMS badge (chatsvc.realtime.receipts).

Registered on the API in chatsvc.api.views. Counts are of messages (not
edits, reactions or other events) after the user's read position, which
their clients report with `read` frames.
"""

from typing import Annotated

from asgiref.sync import async_to_sync
from ninja import Field, Query, Router, Schema

from chatsvc.api.errors import ApiError
from chatsvc.api.membership import UserId, checked_user_id
from chatsvc.api.schemas import ULID_PATTERN, ErrorOut
from chatsvc.messaging import runtime
from chatsvc.rooms import selectors
from chatsvc.streams import REDIS_OUTAGES, StreamUnavailable

router = Router(tags=["members"])

MAX_ROOMS = 100


class RoomUnreadOut(Schema):
    connection_id: str
    unread: int = Field(description="Messages after the user's read position.")
    last_read_seq: int | None = Field(
        description="The room `seq` the user has read up to; `null`: never read (all unread)."
    )


class UnreadOut(Schema):
    user_id: str
    total: int = Field(description="The sum over `rooms`.")
    rooms: list[RoomUnreadOut]


class UnreadQuery(Schema):
    connection_id: list[Annotated[str, Field(pattern=ULID_PATTERN)]] = Field(
        [],
        max_length=MAX_ROOMS,
        description=f"Rooms to count (repeat the parameter; at most {MAX_ROOMS}), also "
        "ones the user never opened. Without it: every room the user has read.",
    )


@router.get(
    "/users/{path:user_id}/unread",
    response={200: UnreadOut, 401: ErrorOut, 422: ErrorOut, 429: ErrorOut, 503: ErrorOut},
    summary="Count a user's unread messages",
)
def unread_counts(request, user_id: UserId, query: Query[UnreadQuery]):
    """Unread messages per room and in total. A room the user never read counts
    all its messages. Rooms that are not yours, or no longer exist, are left
    out. Counts follow the room stream: after Redis lost a room's state, the
    room counts the messages since."""
    user_id = checked_user_id(user_id)
    wanted = list(dict.fromkeys(query.connection_id)) or None
    try:
        counts = async_to_sync(_unread)(
            tenant_id=request.auth.id, user_id=user_id, connection_ids=wanted
        )
    except (StreamUnavailable, *REDIS_OUTAGES):
        raise ApiError(
            503, "unavailable", "unread counts cannot be read right now; retry"
        ) from None
    yours = selectors.existing_room_ids(
        tenant_id=request.auth.id, connection_ids=[c.connection_id for c in counts]
    )
    rooms = [
        {"connection_id": c.connection_id, "unread": c.unread, "last_read_seq": c.last_read_seq}
        for c in counts
        if c.connection_id in yours
    ]
    return {"user_id": user_id, "total": sum(r["unread"] for r in rooms), "rooms": rooms}


async def _unread(**query):
    return await runtime.room_stream().unread(**query)  # this event loop's stream
