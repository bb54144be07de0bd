"""Reads on rooms, always scoped by tenant: another tenant's room does not exist."""

import json
import math
from collections.abc import Sequence

from django.db import connections
from django.db.models import Q
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from chatsvc.core.ulid import is_ulid
from chatsvc.rooms.models import Room, RoomMute, RoomRemoval, UserRevocation


def room_of_tenant(*, tenant_id: str, connection_id: str) -> Room | None:
    if not is_ulid(connection_id):
        return None
    return Room.objects.filter(tenant_id=tenant_id, connection_id=connection_id).first()


def existing_room_ids(*, tenant_id: str, connection_ids: list[str]) -> set[str]:
    valid = [cid for cid in connection_ids if is_ulid(cid)]
    return set(
        Room.objects.filter(tenant_id=tenant_id, connection_id__in=valid).values_list(
            "connection_id", flat=True
        )
    )


def rooms_of_tenant(
    *,
    tenant_id: str,
    status: str | None = None,
    metadata: Sequence[tuple[str, str]] = (),
    before: str | None = None,
    limit: int = 50,
) -> list[Room]:
    """A page of the tenant's rooms, newest first (ConnectionIds are ULIDs: their
    order is the order of creation), those before the ConnectionId `before`.

    `metadata` pairs filter on top-level keys: ("course_id", "42") matches the
    string "42" and the number 42 (a query string cannot tell them apart). On
    PostgreSQL it is a jsonb containment (@>) that the GIN index
    rooms_room_metadata_gin serves (migration 0002).
    """
    rooms = Room.objects.filter(tenant_id=tenant_id)
    if status is not None:
        rooms = rooms.filter(status=status)
    postgres = connections[rooms.db].vendor == "postgresql"
    for index, (key, value) in enumerate(metadata):
        candidates = [value, *_scalars_spelled_by(value)]
        if postgres:
            match = Q()
            for candidate in candidates:
                match |= Q(metadata__contains={key: candidate})
        else:  # SQLite has no @>: compare the key's value (the key may hold "__")
            alias = f"metadata_{index}"
            rooms = rooms.alias(**{alias: KeyTransform(key, "metadata")})
            match = Q()
            for candidate in candidates:
                match |= Q(**{alias: candidate})
        rooms = rooms.filter(match)
    if before:
        rooms = rooms.filter(connection_id__lt=before)
    return list(rooms.order_by("-connection_id")[:limit])


def _scalars_spelled_by(text: str) -> list:
    """The JSON number or boolean `text` spells, if any ("42" -> [42], "true" -> [True])."""
    try:
        value = json.loads(text)
    except ValueError:
        return []
    if isinstance(value, bool) or (
        isinstance(value, int | float) and math.isfinite(value) and text.strip() == text
    ):
        return [value]
    return []


# --- membership ----------------------------------------------------------------------


def _in_force():
    """Removals that still bar: without an end, or ending later."""
    return Q(until__isnull=True) | Q(until__gt=timezone.now())


def is_removed(*, connection_id: str, user_id: str) -> bool:
    return (
        RoomRemoval.objects.filter(room_id=connection_id, user_id=user_id)
        .filter(_in_force())
        .exists()
    )


def muted_until(*, connection_id: str, user_id: str) -> float | None:
    """When the user's mute in the room ends (epoch seconds), if they are muted."""
    until = (
        RoomMute.objects.filter(room_id=connection_id, user_id=user_id, until__gt=timezone.now())
        .values_list("until", flat=True)
        .first()
    )
    return until.timestamp() if until is not None else None


def removal_of(*, room: Room, user_id: str) -> RoomRemoval | None:
    return RoomRemoval.objects.filter(room=room, user_id=user_id).first()


def revocation_of(*, tenant_id: str, user_id: str) -> UserRevocation | None:
    return UserRevocation.objects.filter(tenant_id=tenant_id, user_id=user_id).first()


def removals_among(*, connection_ids: set[str], user_ids: set[str]) -> set[tuple[str, str]]:
    """(connection_id, user_id) pairs removed, of these rooms and users."""
    return set(
        RoomRemoval.objects.filter(room_id__in=connection_ids, user_id__in=user_ids)
        .filter(_in_force())
        .values_list("room_id", "user_id")
    )


def mutes_among(*, connection_ids: set[str], user_ids: set[str]) -> dict[tuple[str, str], float]:
    """(connection_id, user_id) -> end of the mute (epoch seconds), of these rooms and users."""
    return {
        (room_id, user_id): until.timestamp()
        for room_id, user_id, until in RoomMute.objects.filter(
            room_id__in=connection_ids, user_id__in=user_ids, until__gt=timezone.now()
        ).values_list("room_id", "user_id", "until")
    }


def revocations_among(*, tenant_ids: set[str], user_ids: set[str]) -> dict[tuple[str, str], float]:
    """(tenant_id, user_id) -> revoked_at (epoch seconds), of these tenants and users."""
    return {
        (tenant_id, user_id): revoked_at.timestamp()
        for tenant_id, user_id, revoked_at in UserRevocation.objects.filter(
            tenant_id__in=tenant_ids, user_id__in=user_ids
        ).values_list("tenant_id", "user_id", "revoked_at")
    }
