"""Reads on rooms, always scoped by tenant: another tenant's room does not exist."""

from chatsvc.core.ulid import is_ulid
from chatsvc.rooms.models import Room


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
