"""Read positions, receipts and unread counts through the real ASGI app and room stream."""

import pytest
from asgiref.sync import sync_to_async

from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)

CHATTER = ("presence", "typing", "message", "message_edited")


async def post(client, room, n):
    await client.send({"type": "send", "connection_id": room, "client_id": f"c{n}", "body": "hi"})
    return await client.expect("ack", skip=(*CHATTER, "read"))


@pytest.fixture
def api_get(client, world):
    def get(path, **query):
        return client.get(
            f"/api/v1{path}", query, headers={"Authorization": f"Bearer {world.acme.api_key}"}
        )

    return sync_to_async(get)


async def test_reads_are_coalesced_into_one_receipt_and_count_messages_only(
    world, connect, api_get
):
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada", name="Ada"), room=room)
    bob = await connect(factories.token_for(world.acme, user_id="bob", name="Bob"), room=room)
    acks = [await post(ada, room, n) for n in range(4)]
    await ada.send(
        {
            "type": "edit",
            "connection_id": room,
            "client_id": "e",
            "message_id": acks[0]["id"],
            "body": "edited",
        }
    )
    await ada.expect("ack", skip=CHATTER)

    for seq in range(1, acks[1]["seq"] + 1):  # Bob scrolls through two messages
        await bob.send({"type": "read", "connection_id": room, "seq": seq})
    receipt = await ada.expect("read", timeout=3, skip=CHATTER)
    assert receipt == {
        "type": "read",
        "connection_id": room,
        "user": {"id": "bob", "name": "Bob"},
        "seq": acks[1]["seq"],
    }
    assert [f for f in await ada.drain(1.5) if f["type"] == "read"] == []  # one, not twenty

    response = await api_get("/users/bob/unread", connection_id=[room])
    assert response.status_code == 200
    # Two messages after Bob's position; the edit is not a message.
    assert response.json() == {
        "user_id": "bob",
        "total": 2,
        "rooms": [{"connection_id": room, "unread": 2, "last_read_seq": acks[1]["seq"]}],
    }
    listed = await api_get("/users/bob/unread")  # rooms Bob has read
    assert listed.json()["rooms"] == response.json()["rooms"]


async def test_positions_only_move_forward_and_disconnect_flushes(world, connect, api_get):
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada"), room=room)
    acks = [await post(ada, room, n) for n in range(3)]
    await ada.send({"type": "read", "connection_id": room, "seq": 10**9})  # past the end
    await ada.send({"type": "read", "connection_id": room, "seq": 1})  # backwards
    await ada.close()  # before the coalescing interval: the close writes it

    counts = (await api_get("/users/ada/unread")).json()
    assert counts["rooms"] == [
        {"connection_id": room, "unread": 0, "last_read_seq": acks[-1]["seq"]}
    ]


async def test_a_room_never_read_counts_everything_and_other_tenants_rooms_are_left_out(
    world, connect, api_get
):
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada"), room=room)
    for n in range(3):
        await post(ada, room, n)
    theirs = world.other_room.connection_id
    response = await api_get("/users/newbie/unread", connection_id=[room, theirs])
    assert response.json()["rooms"] == [{"connection_id": room, "unread": 3, "last_read_seq": None}]
    bad = await api_get("/users/newbie/unread", connection_id=["nope"])
    assert bad.status_code == 422


async def test_read_needs_a_joined_room_and_a_seq(world, connect):
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada"))
    await ada.send({"type": "read", "connection_id": room, "seq": 1})
    assert (await ada.expect("error"))["code"] == "not_joined"
    await ada.join(room)
    await ada.send({"type": "read", "connection_id": room, "seq": -1})
    assert (await ada.expect("error"))["code"] == "bad_frame"
    await ada.send({"type": "read", "connection_id": room})
    assert (await ada.expect("error"))["code"] == "bad_frame"
