"""Presence: `joined.members`, `presence` events and GET .../members tell one story.

In-process sockets (WebsocketCommunicator) against the Redis store (REDIS_URL)
and against local mode's in-memory store; real server processes for a
server that dies with its sockets.
"""

import os
import signal

import pytest
from asgiref.sync import sync_to_async

from tests import factories
from tests.realtime import multiprocess
from tests.realtime.multiprocess import Peer

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(params=["redis", "local"])
def mode(request, settings):
    """The production store (Redis) or local mode's (no REDIS_URL: in memory)."""
    if request.param == "redis":
        request.getfixturevalue("redis_url")
    else:
        settings.REDIS_URL = None
        settings.CHANNEL_LAYERS = {
            "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {}}
        }
    return request.param


@pytest.fixture
def members(client, world):
    def get(connection_id=None, key=None, **query):
        response = client.get(
            f"/api/v1/connections/{connection_id or world.room.connection_id}/members",
            query,
            headers={"Authorization": f"Bearer {key or world.acme.api_key}"},
        )
        return response.status_code, response.json()

    return sync_to_async(get)


def ids(listing):
    return [member["id"] for member in listing["members"]]


async def test_joined_lists_each_member_once_and_presence_follows(mode, world, connect, members):
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada", name="Ada"))
    joined = await ada.join(room)
    assert joined["members"] == [{"id": "ada", "name": "Ada", "role": "member"}]
    assert joined["member_count"] == 1

    bob_token = factories.token_for(world.acme, user_id="bob", name="Bob", role="moderator")
    bob1 = await connect(bob_token)
    joined = await bob1.join(room)
    assert joined["members"] == [
        {"id": "ada", "name": "Ada", "role": "member"},
        {"id": "bob", "name": "Bob", "role": "moderator"},
    ]
    assert joined["member_count"] == 2
    presence = await ada.expect("presence", skip=())
    assert presence == {
        "type": "presence",
        "connection_id": room,
        "user": {"id": "bob", "name": "Bob"},
        "event": "joined",
    }

    bob2 = await connect(bob_token)  # a second tab: the same member
    joined = await bob2.join(room)
    assert ids(joined) == ["ada", "bob"] and joined["member_count"] == 2
    assert await ada.drain() == []  # no second `presence joined`
    status, listing = await members()
    assert status == 200
    assert listing == {
        "connection_id": room,
        "members": [
            {"id": "ada", "name": "Ada", "role": "member"},
            {"id": "bob", "name": "Bob", "role": "moderator"},
        ],
        "member_count": 2,
    }

    await bob1.send({"type": "leave", "connection_id": room})
    assert (await bob1.expect("left")) == {"type": "left", "connection_id": room}
    assert await ada.drain() == []  # bob is still here on his other socket
    assert ids((await members())[1]) == ["ada", "bob"]

    await bob2.close()  # his last socket: now he left
    presence = await ada.expect("presence", skip=())
    assert presence["event"] == "left" and presence["user"]["id"] == "bob"
    assert (await members())[1]["member_count"] == 1

    rejoined = await bob1.join(room)
    assert ids(rejoined) == ["ada", "bob"]
    presence = await ada.expect("presence", skip=())
    assert presence["event"] == "joined" and presence["user"]["id"] == "bob"
    again = await bob1.join(room)  # a repeated join answers with the members too
    assert ids(again) == ["ada", "bob"] and again["member_count"] == 2


async def test_joined_lists_at_most_the_configured_number(mode, world, connect, members, settings):
    settings.CHAT_PRESENCE_LIST_MAX = 2
    room = world.room.connection_id
    for user in ("u1", "u2", "u3"):
        joined = await connect(factories.token_for(world.acme, user_id=user), room=room)
    joined = await (await connect(factories.token_for(world.acme, user_id="u4"))).join(room)
    assert ids(joined) == ["u1", "u2"]  # first joined first
    assert joined["member_count"] == 4
    status, listing = await members(limit=3)
    assert status == 200 and ids(listing) == ["u1", "u2", "u3"]
    assert listing["member_count"] == 4


async def test_members_are_per_room_and_per_tenant(mode, world, connect, members):
    await connect(factories.token_for(world.acme, user_id="ada"), room=world.room.connection_id)
    await connect(
        factories.token_for(world.other, user_id="zed"), room=world.other_room.connection_id
    )
    assert ids((await members())[1]) == ["ada"]
    other_room = world.other_room.connection_id
    status, body = await members(other_room)  # acme's key, other's room
    assert status == 404 and body == {"error": {"code": "not_found", "message": "no such resource"}}
    status, body = await members(other_room, key=world.other.api_key)
    assert status == 200 and ids(body) == ["zed"]


async def test_a_refused_join_lists_nobody(mode, world, connect, members):
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada", rooms=[room]))
    await ada.send({"type": "join", "connection_id": world.other_room.connection_id})
    assert (await ada.expect("error"))["code"] == "not_found"
    await ada.join(room)
    await ada.send({"type": "leave", "connection_id": room})
    await ada.expect("left")
    assert (await members())[1] == {"connection_id": room, "members": [], "member_count": 0}
    assert (await members(world.other_room.connection_id, key=world.other.api_key))[1][
        "member_count"
    ] == 0


# --- across processes -----------------------------------------------------------------


@pytest.fixture
def start_server(transactional_db, redis_url, aws, tmp_path):
    yield from multiprocess.servers(redis_url=redis_url, aws=aws, tmp_path=tmp_path)


async def test_members_of_a_dead_server_fade_out_and_are_announced(start_server, world):
    """Sockets of a server killed with SIGKILL leave the room within 3 sweeps."""
    issued, room = world.acme, world.room.connection_id
    doomed = start_server(CHAT_REVALIDATE_SECONDS=1)
    survivor = start_server(CHAT_REVALIDATE_SECONDS=1)
    ada = await Peer.open(doomed, factories.token_for(issued, user_id="ada", name="Ada"), room)
    bob = await Peer.open(survivor, factories.token_for(issued, user_id="bob", name="Bob"), room)
    assert [m["id"] for m in bob.joined["members"]] == ["ada", "bob"]
    status, listing = multiprocess.call(
        survivor, "GET", f"/connections/{room}/members", issued.api_key
    )
    assert status == 200 and listing["member_count"] == 2

    os.kill(doomed.process.pid, signal.SIGKILL)  # no disconnect, no cleanup
    left = await bob.expect("presence", timeout=10, event="left")
    assert left["user"] == {"id": "ada", "name": "Ada"}
    status, listing = multiprocess.call(
        survivor, "GET", f"/connections/{room}/members", issued.api_key
    )
    assert [m["id"] for m in listing["members"]] == ["bob"] and listing["member_count"] == 1
    await bob.close()
    ada.socket.transport.abort()
