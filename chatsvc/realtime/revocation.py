"""Live sockets lose access the moment their tenant, key, room, room membership
(a RoomRemoval) or user (a UserRevocation) does, whatever the path.

Two mechanisms, one job:
* Model signals: every save or delete through the ORM (services, admin forms,
  admin actions and bulk delete, management commands, cascades) publishes
  the event after the transaction commits, and every web process closes the
  affected sockets at once.
* A sweep: every CHAT_REVALIDATE_SECONDS each web process checks, in one
  query per kind, that the keys, tenants and rooms its sockets use are still
  valid, and that their users are neither removed from their rooms nor
  revoked. It catches what signals cannot see: QuerySet.update() and raw SQL,
  a management command in local mode, whose in-memory channel layer reaches
  no other process, and a join that raced a removal or a mute. The same sweep renews
  the sockets' presence entries (chatsvc.realtime.presence).
"""

import asyncio
import logging

from channels.db import database_sync_to_async
from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_delete

from chatsvc.core.cancellation import raise_if_cancelled
from chatsvc.realtime import events, presence
from chatsvc.rooms import selectors
from chatsvc.rooms.models import Room, RoomMute, RoomRemoval, UserRevocation, revokes
from chatsvc.tenants.models import Tenant, TenantKey
from chatsvc.usage import recorder as usage

logger = logging.getLogger(__name__)


def _after_commit(publish, *args) -> None:
    transaction.on_commit(lambda: _publish(publish, *args))


def _publish(publish, *args) -> None:
    try:
        publish(*args)
    except Exception:  # the sweep closes them a little later
        logger.exception("revocation event not published", extra={"event": publish.__name__})


def tenant_saved(sender, instance: Tenant, **kwargs) -> None:
    if not instance.is_active:
        _after_commit(events.tenant_disabled, instance.id)


def tenant_deleted(sender, instance: Tenant, **kwargs) -> None:
    _after_commit(events.tenant_disabled, instance.id)


def key_saved(sender, instance: TenantKey, **kwargs) -> None:
    if not instance.is_active:
        _after_commit(events.key_revoked, instance.tenant_id, instance.key_id)


def key_deleted(sender, instance: TenantKey, **kwargs) -> None:
    _after_commit(events.key_revoked, instance.tenant_id, instance.key_id)


def room_saved(sender, instance: Room, **kwargs) -> None:
    if not instance.is_open:
        _after_commit(events.room_closed, instance.connection_id)


def room_deleted(sender, instance: Room, **kwargs) -> None:
    _after_commit(events.room_closed, instance.connection_id)


def member_removed(sender, instance: RoomRemoval, created: bool, **kwargs) -> None:
    _after_commit(events.member_removed, instance.room_id, instance.user_id)


def member_muted(sender, instance: RoomMute, **kwargs) -> None:
    until = instance.until.timestamp()
    _after_commit(events.member_muted, instance.room_id, instance.user_id, until)


def member_unmuted(sender, instance: RoomMute, **kwargs) -> None:
    _after_commit(events.member_muted, instance.room_id, instance.user_id, None)


def user_revoked(sender, instance: UserRevocation, **kwargs) -> None:
    revoked_at = instance.revoked_at.timestamp()
    _after_commit(events.user_revoked, instance.tenant_id, instance.user_id, revoked_at)


def connect_signals() -> None:
    post_save.connect(tenant_saved, sender=Tenant, dispatch_uid="revoke-tenant-saved")
    # pre_delete: published before the cascade's key deletions, so sockets get 4403 (stop).
    pre_delete.connect(tenant_deleted, sender=Tenant, dispatch_uid="revoke-tenant-deleted")
    post_save.connect(key_saved, sender=TenantKey, dispatch_uid="revoke-key-saved")
    post_delete.connect(key_deleted, sender=TenantKey, dispatch_uid="revoke-key-deleted")
    post_save.connect(room_saved, sender=Room, dispatch_uid="revoke-room-saved")
    post_delete.connect(room_deleted, sender=Room, dispatch_uid="revoke-room-deleted")
    post_save.connect(member_removed, sender=RoomRemoval, dispatch_uid="revoke-member-removed")
    post_save.connect(user_revoked, sender=UserRevocation, dispatch_uid="revoke-user-revoked")
    post_save.connect(member_muted, sender=RoomMute, dispatch_uid="mute-saved")
    post_delete.connect(member_unmuted, sender=RoomMute, dispatch_uid="mute-deleted")


# --- the sweep -------------------------------------------------------------------------


def _still_valid(key_ids: set[str], tenant_ids: set[str], room_ids: set[str], user_ids: set[str]):
    keys = set(
        TenantKey.objects.filter(key_id__in=key_ids, revoked_at=None).values_list(
            "key_id", flat=True
        )
    )
    tenants = set(
        Tenant.objects.filter(id__in=tenant_ids, is_active=True).values_list("id", flat=True)
    )
    rooms = set(
        Room.objects.filter(connection_id__in=room_ids, status=Room.Status.OPEN).values_list(
            "connection_id", flat=True
        )
    )
    removed = selectors.removals_among(connection_ids=room_ids, user_ids=user_ids)
    revoked = selectors.revocations_among(tenant_ids=tenant_ids, user_ids=user_ids)
    muted = selectors.mutes_among(connection_ids=room_ids, user_ids=user_ids)
    return keys, tenants, rooms, removed, revoked, muted


async def sweep(sockets) -> None:
    """Close or remove from rooms the sockets whose access is gone."""
    sockets = [s for s in sockets if s.user is not None and not s.closed]
    if not sockets:
        return
    keys, tenants, rooms, removed, revoked, muted = await database_sync_to_async(_still_valid)(
        {s.user.key_id for s in sockets},
        {s.user.tenant.id for s in sockets},
        {room for s in sockets for room in s.rooms},
        {s.user.id for s in sockets},
    )
    for socket in sockets:
        user = socket.user
        revoked_at = revoked.get((user.tenant.id, user.id))
        if user.tenant.id not in tenants:
            await socket.on_tenant_disabled()
        elif user.key_id not in keys:
            await socket.on_key_revoked(user.key_id)
        elif revokes(revoked_at, user.issued_at):
            await socket.on_user_revoked(user.id, revoked_at)
        else:
            for room in set(socket.rooms) - rooms:
                await socket.on_room_closed(room)
            for room in set(socket.rooms):
                if (room, user.id) in removed:
                    await socket.on_member_removed(room, user.id)
                else:
                    socket.on_member_muted(room, user.id, muted.get((room, user.id)))


async def sweep_forever(live, interval: float) -> None:
    from chatsvc.realtime.connection_limits import user_sockets

    while True:
        raise_if_cancelled()  # the sweep's Redis calls may have swallowed it
        await asyncio.sleep(interval)
        sockets = list(live)
        try:
            await sweep(sockets)
            # The user socket counts stay alive for sockets that still are.
            await user_sockets().refresh([s for s in sockets if s.user and not s.closed])
        except Exception:
            logger.exception("revalidation sweep failed")
        try:  # presence has its own heartbeat: a database outage must not fade it out
            await presence.renew([s for s in sockets if s.user and not s.closed])
        except Exception:
            logger.exception("presence renewal failed")
        await usage.sample_sockets(sockets)  # live sockets per tenant; never raises
