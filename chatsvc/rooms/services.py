"""Writes on rooms. Closing a room tells its live members at once."""

from django.db import transaction
from django.utils import timezone

from chatsvc.realtime import events
from chatsvc.rooms.models import Room
from chatsvc.tenants.models import Tenant


def open_room(*, tenant: Tenant, title: str = "", metadata: dict | None = None) -> Room:
    return Room.objects.create(tenant=tenant, title=title, metadata=metadata or {})


def close_room(*, room: Room) -> Room:
    if room.is_open:
        room.status = Room.Status.CLOSED
        room.closed_at = timezone.now()
        room.save(update_fields=["status", "closed_at"])
        connection_id = room.connection_id
        transaction.on_commit(lambda: events.room_closed(connection_id))
    return room
