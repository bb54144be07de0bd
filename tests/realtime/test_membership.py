"""Removing a user from a room and revoking a user's sessions reach live sockets
at once, in every process, and hold against rejoining and reconnecting.

REST calls go through the real API (Django's test client in-process, HTTP to
real servers across processes); the admin through its real forms and actions.
"""

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async

from chatsvc.rooms.models import RoomRemoval, UserRevocation
from tests import factories
from tests.realtime import multiprocess
from tests.realtime.conftest import async_db
from tests.realtime.multiprocess import Peer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def rest(client, world):
    def call(method, path, key=None):
        response = getattr(client, method)(
            f"/api/v1{path}",
            content_type="application/json",
            headers={"Authorization": f"Bearer {key or world.acme.api_key}"},
        )
        return response.status_code, response.json()

    return sync_to_async(call)


async def presence_event(client, event: str) -> dict:
    """The next `presence` frame of this `event` (passing over others: a member's
    own `presence joined` may still be on its way when the test moves on)."""
    while True:
        frame = await client.expect("presence", skip=("presence", "typing", "message"))
        if frame["event"] == event:
            return frame


async def next_second(moment: float) -> None:
    """Sleep until the whole second after `moment` (a token's iat is in seconds)."""
    await asyncio.sleep(max(0.0, int(moment) + 1 - time.time()) + 0.05)


async def test_removing_a_user_takes_every_socket_out_of_that_room_only(world, connect, rest):
    room = world.room.connection_id
    elsewhere = (await async_db(factories.room_for)(world.acme)).connection_id
    token = factories.token_for(world.acme, user_id="ada", name="Ada")
    tab1 = await connect(token, room=room)
    tab2 = await connect(token, room=room)
    await tab2.join(elsewhere)
    bob = await connect(factories.token_for(world.acme, user_id="bob"), room=room)
    await tab1.drain()

    status, body = await rest("delete", f"/connections/{room}/members/ada")
    assert status == 200
    assert body["status"] == "removed" and body["user_id"] == "ada" and body["removed_at"]

    for tab in (tab1, tab2):
        assert (await tab.expect("left")) == {
            "type": "left",
            "connection_id": room,
            "reason": "removed",
        }
    presence = await presence_event(bob, "left")
    assert presence["user"]["id"] == "ada"
    assert [f for f in await bob.drain() if f["type"] == "presence"] == []  # once, not per tab

    # Still in the other room, still chatting there.
    await tab2.send({"type": "send", "connection_id": elsewhere, "client_id": "c", "body": "hi"})
    assert (await tab2.expect("ack", skip=("message", "presence")))["client_id"] == "c"
    # No way back in: not with this token, not with a new one.
    await tab1.send({"type": "join", "connection_id": room})
    refused = await tab1.expect("error")
    assert refused["code"] == "removed" and refused["ref"] == room
    await tab1.send({"type": "send", "connection_id": room, "client_id": "x", "body": "hi"})
    assert (await tab1.expect("error"))["code"] == "not_joined"
    fresh = await connect(factories.token_for(world.acme, user_id="ada"))
    await fresh.send({"type": "join", "connection_id": room})
    assert (await fresh.expect("error"))["code"] == "removed"
    assert (await rest("get", f"/connections/{room}/members"))[1]["member_count"] == 1

    # Removing again changes nothing; re-admitting lets the same token in again.
    again = await rest("delete", f"/connections/{room}/members/ada")
    assert again == (200, body)
    status, admitted = await rest("put", f"/connections/{room}/members/ada")
    assert status == 200 and admitted["status"] == "admitted" and admitted["removed_at"] is None
    joined = await tab1.join(room)
    assert [m["id"] for m in joined["members"]] == ["bob", "ada"]


async def test_another_tenants_user_and_room_are_untouched(world, connect, rest):
    """Same user id at another tenant: neither a removal nor a revocation reaches them."""
    zed = await connect(
        factories.token_for(world.other, user_id="ada"), room=world.other_room.connection_id
    )
    status, body = await rest(
        "delete", f"/connections/{world.other_room.connection_id}/members/ada"
    )
    assert status == 404 and body["error"]["code"] == "not_found"
    assert await async_db(RoomRemoval.objects.count)() == 0
    assert (await rest("post", "/users/ada/revoke"))[0] == 200  # acme's ada
    await zed.send({"type": "ping"})
    assert (await zed.expect("pong"))["type"] == "pong"
    assert [f["type"] for f in await zed.drain()] == []


async def test_revoking_a_user_closes_their_sockets_and_refuses_older_tokens(world, connect, rest):
    room = world.room.connection_id
    old = factories.token_for(world.acme, user_id="ada")
    tabs = [await connect(old, room=room), await connect(old)]
    bob = await connect(factories.token_for(world.acme, user_id="bob"), room=room)

    status, body = await rest("post", "/users/ada/revoke")
    assert status == 200 and body["user_id"] == "ada"
    for tab in tabs:
        await tab.expect_closed(4401)
        await tab.close()  # the server's disconnect, as a real server runs it
    assert (await presence_event(bob, "left"))["user"]["id"] == "ada"

    again = await connect()
    await again.send({"type": "auth", "token": old})
    assert "revoked" in (await again.expect("error", skip=()))["message"]
    await again.expect_closed(4401)

    revoked_at = (await async_db(UserRevocation.objects.get)(user_id="ada")).revoked_at
    await next_second(revoked_at.timestamp())
    fresh = await connect(factories.token_for(world.acme, user_id="ada"), room=room)
    await fresh.send({"type": "ping"})
    assert (await fresh.expect("pong"))["type"] == "pong"


async def test_the_sweep_catches_removals_and_revocations_that_bypass_signals(
    world, connect, settings
):
    settings.CHAT_REVALIDATE_SECONDS = 1
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada"), room=room)
    bob = await connect(factories.token_for(world.acme, user_id="bob"), room=room)
    await async_db(RoomRemoval.objects.bulk_create)([RoomRemoval(room=world.room, user_id="ada")])
    assert (await ada.expect("left", timeout=4))["reason"] == "removed"
    await async_db(UserRevocation.objects.bulk_create)(
        [UserRevocation(tenant=world.acme.tenant, user_id="bob")]
    )
    await bob.expect_closed(4401, timeout=4)


async def test_the_admin_adds_and_lifts_removals_and_revocations(world, connect, admin_client):
    room = world.room.connection_id
    token = factories.token_for(world.acme, user_id="ada")
    ada = await connect(token, room=room)
    post = sync_to_async(admin_client.post)

    added = await post("/admin/rooms/roomremoval/add/", {"room": room, "user_id": "ada"})
    assert added.status_code == 302, added.context["adminform"].form.errors
    assert (await ada.expect("left"))["reason"] == "removed"
    removal = await async_db(RoomRemoval.objects.get)(user_id="ada")
    listed = await sync_to_async(admin_client.get)("/admin/rooms/roomremoval/")
    assert listed.status_code == 200 and b"ada" in listed.content
    lifted = await post(
        "/admin/rooms/roomremoval/", {"action": "lift", "_selected_action": [removal.pk]}
    )
    assert lifted.status_code == 302
    assert (await ada.join(room))["connection_id"] == room

    added = await post(
        "/admin/rooms/userrevocation/add/",
        {
            "tenant": world.acme.tenant.pk,
            "user_id": "ada",
            "revoked_at_0": "2100-01-01",
            "revoked_at_1": "00:00:00",
        },
    )
    assert added.status_code == 302
    await ada.expect_closed(4401)
    revocation = await async_db(UserRevocation.objects.get)(user_id="ada")
    lifted = await post(
        "/admin/rooms/userrevocation/", {"action": "lift", "_selected_action": [revocation.pk]}
    )
    assert lifted.status_code == 302
    assert (await connect(token, room=room)) is not None  # the same token works again


async def test_local_mode_removes_and_revokes_in_memory(world, connect, rest, settings):
    """`make run`: no Redis, the in-memory channel layer, one process."""
    settings.REDIS_URL = None
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {}}
    }
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada"), room=room)
    bob = await connect(factories.token_for(world.acme, user_id="bob"), room=room)
    assert (await rest("delete", f"/connections/{room}/members/ada"))[0] == 200
    assert (await ada.expect("left"))["reason"] == "removed"
    assert (await rest("post", "/users/bob/revoke"))[0] == 200
    await bob.expect_closed(4401)
    await bob.close()  # the server's disconnect
    assert (await rest("get", f"/connections/{room}/members"))[1]["member_count"] == 0


# --- across processes -----------------------------------------------------------------


@pytest.fixture
def start_server(transactional_db, redis_url, aws, tmp_path):
    yield from multiprocess.servers(redis_url=redis_url, aws=aws, tmp_path=tmp_path)


async def test_removal_and_revocation_reach_every_server(start_server, world):
    """The REST call lands on one server; the user's sockets live on two others."""
    issued, room = world.acme, world.room.connection_id
    api, first, second = start_server(), start_server(), start_server()
    token = factories.token_for(issued, user_id="ada")
    tabs = [await Peer.open(first, token, room), await Peer.open(second, token, room)]
    bob = await Peer.open(second, factories.token_for(issued, user_id="bob"), room)

    status, _ = multiprocess.call(api, "DELETE", f"/connections/{room}/members/ada", issued.api_key)
    assert status == 200
    for tab in tabs:
        assert (await tab.expect("left"))["reason"] == "removed"
    await tabs[0].send({"type": "join", "connection_id": room})
    assert (await tabs[0].expect("error"))["code"] == "removed"
    status, listing = multiprocess.call(api, "GET", f"/connections/{room}/members", issued.api_key)
    assert [m["id"] for m in listing["members"]] == ["bob"]

    status, _ = multiprocess.call(api, "POST", "/users/ada/revoke", issued.api_key)
    assert status == 200
    for tab in tabs:
        assert await tab.expect_closed() == 4401
    await bob.send({"type": "ping"})
    assert (await bob.expect("pong"))["type"] == "pong"
    await bob.close()
