"""The happy paths of protocol v1, through the real ASGI app and a real SQS (moto server)."""

import pytest

from chatsvc.core.ulid import is_ulid
from chatsvc.rooms.services import close_room
from tests import factories
from tests.realtime.conftest import async_db, queued_bodies

pytestmark = pytest.mark.django_db(transaction=True)


async def test_message_fans_out_and_is_acked_after_sqs_accepted_it(world, connect):
    ada = await connect(
        factories.token_for(world.acme, user_id="ada", name="Ada"), room=world.room.connection_id
    )
    bob = await connect(
        factories.token_for(world.acme, user_id="bob", name="Bob"), room=world.room.connection_id
    )
    presence = await ada.expect("presence", skip=())
    assert presence["event"] == "joined" and presence["user"] == {"id": "bob", "name": "Bob"}

    await ada.send(
        {
            "type": "send",
            "connection_id": world.room.connection_id,
            "client_id": "c1",
            "body": "hello",
        }
    )

    got = await bob.expect("message")
    assert got["body"] == "hello" and got["sender"] == {"id": "ada", "name": "Ada"}
    assert is_ulid(got["id"]) and got["ts"].endswith("Z")
    own = await ada.expect("message")  # the sender's own copy comes before its ack
    ack = await ada.expect("ack")
    assert own["id"] == ack["id"] == got["id"] and ack["client_id"] == "c1"
    assert got["seq"] == ack["seq"] == 1  # a new room's first message

    [queued] = queued_bodies(world.aws)
    assert queued == {
        "v": 1,
        "id": got["id"],
        "seq": 1,
        "tenant_id": world.acme.tenant.id,
        "connection_id": world.room.connection_id,
        "sender_id": "ada",
        "sender_name": "Ada",
        "body": "hello",
        "ts": got["ts"],
        "expires_at": queued["expires_at"],
    }
    assert queued["expires_at"] > 0  # retention 365 days by default


async def test_resending_a_client_id_does_not_create_a_second_message(world, connect):
    ada = await connect(
        factories.token_for(world.acme, user_id="ada"), room=world.room.connection_id
    )
    bob = await connect(
        factories.token_for(world.acme, user_id="bob"), room=world.room.connection_id
    )
    frame = {
        "type": "send",
        "connection_id": world.room.connection_id,
        "client_id": "same",
        "body": "hi",
    }

    await ada.send(frame)
    first = await ada.expect("ack", skip=("message", "presence"))
    await ada.send(frame)
    second = await ada.expect("ack", skip=())

    assert first == second
    assert (await bob.expect("message"))["id"] == first["id"]
    assert "message" not in [frame["type"] for frame in await bob.drain()]
    assert len(queued_bodies(world.aws)) == 1


async def test_resend_after_reconnect_maps_to_the_same_message(world, connect):
    token = factories.token_for(world.acme, user_id="ada")
    frame = {
        "type": "send",
        "connection_id": world.room.connection_id,
        "client_id": "r1",
        "body": "x",
    }
    first_socket = await connect(token, room=world.room.connection_id)
    await first_socket.send(frame)
    first = await first_socket.expect("ack", skip=("message",))
    await first_socket.close()

    second_socket = await connect(token, room=world.room.connection_id)
    await second_socket.send(frame)
    assert (await second_socket.expect("ack"))["id"] == first["id"]


async def test_one_socket_joins_several_rooms_and_leaves_one(world, connect):
    second_room = await async_db(factories.room_for)(world.acme, "Second")
    ada = await connect(
        factories.token_for(world.acme, user_id="ada"), room=world.room.connection_id
    )
    await ada.join(second_room.connection_id)
    bob = await connect(
        factories.token_for(world.acme, user_id="bob"), room=second_room.connection_id
    )

    await ada.send({"type": "leave", "connection_id": world.room.connection_id})
    assert (await ada.expect("left"))["connection_id"] == world.room.connection_id
    await bob.send(
        {
            "type": "send",
            "connection_id": second_room.connection_id,
            "client_id": "b",
            "body": "2nd",
        }
    )
    assert (await ada.expect("message"))["connection_id"] == second_room.connection_id


async def test_presence_and_typing_reach_the_others_only(world, connect):
    ada = await connect(
        factories.token_for(world.acme, user_id="ada"), room=world.room.connection_id
    )
    bob = await connect(
        factories.token_for(world.acme, user_id="bob"), room=world.room.connection_id
    )
    await ada.expect("presence", skip=())

    await bob.send({"type": "typing", "connection_id": world.room.connection_id})
    typing = await ada.expect("typing", skip=())
    assert typing["user"]["id"] == "bob"
    assert "typing" not in [frame["type"] for frame in await bob.drain()]

    await bob.send({"type": "leave", "connection_id": world.room.connection_id})
    left = await ada.expect("presence", skip=())
    assert left["event"] == "left" and left["user"]["id"] == "bob"


async def test_ping_pong(world, connect):
    ada = await connect(factories.token_for(world.acme))
    await ada.send({"type": "ping"})
    assert (await ada.recv())["type"] == "pong"


async def test_closing_a_room_tells_its_members(world, connect):
    ada = await connect(factories.token_for(world.acme), room=world.room.connection_id)
    await async_db(close_room)(room=world.room)
    left = await ada.expect("left")
    assert left == {"type": "left", "connection_id": world.room.connection_id, "reason": "closed"}
    # The socket is no longer in the room: frames about it are `not_joined` ...
    await ada.send(
        {
            "type": "send",
            "connection_id": world.room.connection_id,
            "client_id": "late",
            "body": "x",
        }
    )
    error = await ada.expect("error")
    assert (error["code"], error["ref"]) == ("not_joined", "late")
    # ... and joining it again is `room_closed`: do not retry.
    await ada.send({"type": "join", "connection_id": world.room.connection_id})
    error = await ada.expect("error")
    assert (error["code"], error["connection_id"]) == ("room_closed", world.room.connection_id)


async def test_ready_reports_the_user(world, connect):
    client = await connect()
    ready = await client.auth(
        factories.token_for(world.acme, user_id="ada", name="Ada", role="moderator")
    )
    assert ready["user"] == {"id": "ada", "name": "Ada", "role": "moderator"}
