"""Every path that deactivates, revokes or deletes closes the affected live sockets.

Model signals make it immediate for every ORM save and delete (admin forms,
admin actions and bulk delete, services, commands, cascades); the periodic
sweep catches what signals cannot see (QuerySet.update, raw SQL, and a
command in local mode that publishes to its own in-memory layer).
"""

import pytest
from asgiref.sync import sync_to_async

from chatsvc.rooms.models import Room
from chatsvc.tenants.models import Tenant, TenantKey
from tests import factories
from tests.realtime.conftest import async_db

pytestmark = pytest.mark.django_db(transaction=True)


def untick_active(tenant_id):
    tenant = Tenant.objects.get(pk=tenant_id)
    tenant.is_active = False
    tenant.save()  # what the admin change form does


@pytest.mark.parametrize(
    ("change", "code"),
    [
        pytest.param(lambda w: untick_active(w.acme.tenant.id), 4403, id="admin-form-inactive"),
        pytest.param(
            lambda w: Tenant.objects.get(pk=w.acme.tenant.id).delete(), 4403, id="delete-tenant"
        ),
        pytest.param(
            lambda w: TenantKey.objects.get(pk=w.acme.key.pk).delete(), 4401, id="delete-key"
        ),
        pytest.param(
            lambda w: TenantKey.objects.filter(tenant=w.acme.tenant).delete(),
            4401,
            id="bulk-delete-keys",
        ),
    ],
)
async def test_saves_and_deletes_close_live_sockets_at_once(world, connect, change, code):
    ada = await connect(
        factories.token_for(world.acme, user_id="ada"), room=world.room.connection_id
    )
    bystander = await connect(factories.token_for(world.other), room=world.other_room.connection_id)
    await async_db(change)(world)
    # Deleting the tenant deletes its rooms too: the room's `left {reason: closed}`
    # (room stream) and the close (tenant channel) may come in either order.
    frame = await ada.expect("__closed__", 3, skip=("error", "presence", "typing", "left"))
    assert frame["code"] == code
    await bystander.send({"type": "ping"})
    assert (await bystander.expect("pong"))["type"] == "pong"


async def test_deleting_a_room_in_the_admin_removes_its_members(world, connect, admin_client):
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada"), room=room)
    response = await sync_to_async(admin_client.post)(
        "/admin/rooms/room/",
        {"action": "delete_selected", "_selected_action": [room], "post": "yes"},
    )
    assert response.status_code == 302
    assert (await ada.expect("left")) == {"type": "left", "connection_id": room, "reason": "closed"}
    await ada.send({"type": "send", "connection_id": room, "client_id": "c1", "body": "hi"})
    assert (await ada.expect("error"))["code"] == "not_joined"


async def test_the_sweep_catches_what_bypasses_signals(world, connect, settings):
    settings.CHAT_REVALIDATE_SECONDS = 1
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada"), room=room)
    key_user = await connect(
        factories.token_for(world.other, user_id="bob"), room=world.other_room.connection_id
    )
    await async_db(Room.objects.filter(pk=room).update)(status=Room.Status.CLOSED)
    assert (await ada.expect("left", timeout=4))["reason"] == "closed"
    await async_db(TenantKey.objects.filter(tenant=world.other.tenant).update)(
        revoked_at="2026-01-01T00:00Z"
    )
    await key_user.expect_closed(4401, timeout=4)
    await async_db(Tenant.objects.filter(pk=world.acme.tenant.id).update)(is_active=False)
    await ada.expect_closed(4403, timeout=4)
