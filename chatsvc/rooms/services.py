"""Writes on rooms. Closing a room tells its live members at once."""

import logging

from django.utils import timezone

from chatsvc.messaging import runtime
from chatsvc.rooms.models import Room
from chatsvc.streams import StreamUnavailable
from chatsvc.tenants.models import Tenant

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
    if room.is_open:
        room.status = Room.Status.CLOSED
        room.closed_at = timezone.now()
        room.save(update_fields=["status", "closed_at"])  # members leave: realtime.revocation
    return room
