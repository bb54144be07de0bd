"""Writes on rooms and their membership. Closing a room, removing a member or
revoking a user tells the live sockets at once (chatsvc.realtime.revocation)."""

import logging

from django.db import transaction
from django.utils import timezone

from chatsvc.core.ulid import new_ulid
from chatsvc.messaging import runtime
from chatsvc.rooms.models import Room, RoomRemoval, UserRevocation
from chatsvc.streams import StreamUnavailable
from chatsvc.tenants.models import Tenant
from chatsvc.webhooks import outbox

logger = logging.getLogger(__name__)


def open_room(*, tenant: Tenant, title: str = "", metadata: dict | None = None) -> Room:
    room = Room.objects.create(tenant=tenant, title=title, metadata=metadata or {})
    try:
        runtime.init_room(room.connection_id)  # its first message is seq 1
    except StreamUnavailable:
        # Harmless: the first message then starts an epoch at a higher seq.
        logger.warning("room stream not initialised", extra={"connection_id": room.connection_id})
    return room


def close_room(*, room: Room) -> Room:
    with transaction.atomic():
        # The row lock makes one close win: one closed_at, one room.closed webhook.
        current = Room.objects.select_for_update().only("status", "closed_at").get(pk=room.pk)
        room.status, room.closed_at = current.status, current.closed_at
        if room.is_open:
            room.status = Room.Status.CLOSED
            room.closed_at = timezone.now()
            room.save(update_fields=["status", "closed_at"])  # members leave: realtime.revocation
            outbox.record([_room_closed_event(room)])  # commits with the close
    return room


def _room_closed_event(room: Room) -> dict:
    return {
        "id": new_ulid(),
        "type": outbox.ROOM_CLOSED,
        "tenant_id": room.tenant_id,
        "connection_id": room.connection_id,
        "occurred_at": room.closed_at.isoformat().replace("+00:00", "Z"),
        "data": {
            "connection_id": room.connection_id,
            "title": room.title,
            "metadata": room.metadata,
            "closed_at": room.closed_at.isoformat().replace("+00:00", "Z"),
        },
    }


# --- membership: removals and revocations -------------------------------------------
# Publishing is realtime.revocation's job (model signals after commit, and its sweep).


def remove_member(
    *,
    room: Room,
    user_id: str,
    until=None,
    by: str = "",
    reason: str = "",
    by_moderator: bool = False,
) -> RoomRemoval:
    """The user leaves the room on every socket and cannot rejoin until re-admitted
    (or until `until`: a timed ban).

    The tenant's plain removal is idempotent (removing again keeps the first
    removal's time) and outranks a moderator's ban: it replaces a timed or
    moderator's one with a permanent removal only the tenant lifts. A ban
    (`until`, `by` or `reason` given) replaces what is there.
    """
    if until is None and not by and not reason and not by_moderator:
        removal, created = RoomRemoval.objects.get_or_create(room=room, user_id=user_id)
        if not created and (removal.until is not None or removal.by_moderator):
            removal.until, removal.by_moderator = None, False
            removal.save(update_fields=["until", "by_moderator"])  # live sockets leave again
        return removal
    removal, _ = RoomRemoval.objects.update_or_create(
        room=room,
        user_id=user_id,
        defaults={
            "until": until,
            "removed_by": by,
            "reason": reason,
            "by_moderator": by_moderator,
            "removed_at": timezone.now(),
        },
    )
    return removal


def readmit_member(*, room: Room, user_id: str) -> None:
    """Lift a removal (idempotent: nothing to lift is fine)."""
    for removal in RoomRemoval.objects.filter(room=room, user_id=user_id):
        removal.delete()


def revoke_user(*, tenant: Tenant, user_id: str) -> UserRevocation:
    """Refuse every token of the user issued until now and close their live sockets.

    Calling it again moves the moment forward (tokens minted in between are refused too).
    """
    revocation, _ = UserRevocation.objects.update_or_create(
        tenant=tenant, user_id=user_id, defaults={"revoked_at": timezone.now()}
    )
    return revocation
