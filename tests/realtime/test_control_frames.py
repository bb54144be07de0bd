"""Control frames have their own rate limit, and one `join` may name several rooms.

Through the real ASGI app and a real SQS (moto server), like test_chat.py.
"""

import pytest

from chatsvc.core.ulid import new_ulid
from chatsvc.rooms.services import close_room
from tests import factories
from tests.realtime.conftest import async_db
from tests.realtime.test_bad_input import send_frame

pytestmark = pytest.mark.django_db(transaction=True)


async def next_frame(client, timeout=5):
    """The next frame that is not presence, typing or message."""
    while (frame := await client.recv(timeout))["type"] in ("presence", "typing", "message"):
        pass
    return frame


async def frames_until(client, count, timeout=3):
    """The next `count` frames, passing over presence and typing."""
    frames = []
    while len(frames) < count:
        frame = await client.recv(timeout)
        if frame["type"] not in ("presence", "typing"):
            frames.append(frame)
    return frames


# --- two buckets ------------------------------------------------------------------------


async def test_twenty_joins_and_pings_are_not_limited_by_the_send_rate(world, connect):
    """Tenant `other` has the default 5 messages per second (burst 10)."""
    room = world.other_room.connection_id
    client = await connect(factories.token_for(world.other))
    for _ in range(20):
        await client.send({"type": "join", "connection_id": room})
    for _ in range(20):
        await client.send({"type": "ping"})
    frames = await frames_until(client, 40)
    assert [f["type"] for f in frames] == ["joined"] * 20 + ["pong"] * 20
    assert await client.drain() == []


async def test_sends_keep_the_tenant_rate_and_leave_control_frames_alone(world, connect):
    room = world.other_room.connection_id
    client = await connect(factories.token_for(world.other), room=room)
    for n in range(15):
        await client.send(send_frame(room, client_id=f"s{n}"))
    await client.send({"type": "ping"})  # the send bucket is empty; the control one is not
    frames = []
    while sum(f["type"] in ("ack", "error") for f in frames) < 15 or "pong" not in str(frames):
        frames.append(await next_frame(client))
    errors = [f for f in frames if f["type"] == "error"]
    acked = [f["client_id"] for f in frames if f["type"] == "ack"]
    # A burst of 10 (and what refilled at 5/s meanwhile) passes; the rest is refused.
    assert 10 <= len(acked) <= 13 and len(errors) == 15 - len(acked)
    assert {e["code"] for e in errors} == {"rate_limited"}
    assert {e["ref"] for e in errors}.isdisjoint(acked)
    assert errors[0]["message"] == (
        "too many messages (send, typing, edit, delete, react, moderate, upload): "
        "at most 5/s, burst 10; slow down"
    )
    assert [f["type"] for f in frames].count("pong") == 1

    await client.send({"type": "typing", "connection_id": room})  # typing spends the send bucket
    error = await client.expect("error")
    assert error["code"] == "rate_limited" and error["ref"] == room


async def test_a_control_flood_is_limited_and_closed_4429(world, connect, settings):
    settings.CHAT_CONTROL_FRAMES_PER_SECOND = 2
    settings.CHAT_CONTROL_BURST = 3
    client = await connect(factories.token_for(world.other))
    for _ in range(30):
        await client.send({"type": "history", "connection_id": world.other_room.connection_id})
    frames = []
    while (frame := await client.recv())["type"] != "__closed__":
        frames.append(frame)
    assert frame["code"] == 4429
    codes = [f["code"] for f in frames if f["type"] == "error"]
    assert codes[:3] == ["not_joined"] * 3  # the burst: handled (not joined yet)
    assert set(codes[3:]) == {"rate_limited"} and len(codes[3:]) == 20  # 20 strikes
    assert frames[3]["message"] == "too many control frames: at most 2/s, burst 3; slow down"


# --- join {connection_ids} --------------------------------------------------------------


async def test_one_join_takes_several_rooms_each_answered_in_order(world, connect):
    second = await async_db(factories.room_for)(world.acme, "Second")
    closed = await async_db(factories.room_for)(world.acme, "Closed")
    await async_db(close_room)(room=closed)
    rooms = [
        world.room.connection_id,
        world.other_room.connection_id,  # another tenant's: not found
        second.connection_id,
        "not-a-ulid",
        closed.connection_id,
        world.room.connection_id,  # named twice: answered once
    ]
    client = await connect(factories.token_for(world.acme))
    await client.send({"type": "join", "connection_ids": rooms})

    frames = await frames_until(client, 5)
    summary = [(f["type"], f["connection_id"], f.get("code")) for f in frames]
    assert summary == [
        ("joined", world.room.connection_id, None),
        ("error", world.other_room.connection_id, "not_found"),
        ("joined", second.connection_id, None),
        ("error", "not-a-ulid", "not_found"),
        ("error", closed.connection_id, "room_closed"),
    ]
    for error in (f for f in frames if f["type"] == "error"):
        assert error["ref"] == error["connection_id"]
    assert frames[1]["message"] == "no such room"  # indistinguishable from a missing room
    assert await client.drain() == []

    # Both rooms are live.
    for room in (world.room.connection_id, second.connection_id):
        await client.send(send_frame(room, client_id=f"to-{room}"))
        assert (await client.expect("message"))["connection_id"] == room


async def test_a_single_join_error_names_its_room_too(world, connect):
    client = await connect(factories.token_for(world.acme))
    room = new_ulid()
    await client.send({"type": "join", "connection_id": room})
    error = await client.expect("error")
    assert error == {
        "type": "error",
        "code": "not_found",
        "message": "no such room",
        "ref": room,
        "connection_id": room,
    }


async def test_several_rooms_resume_with_per_room_since_and_epoch(world, connect):
    second = await async_db(factories.room_for)(world.acme, "Second")
    room, other = world.room.connection_id, second.connection_id
    writer = await connect(factories.token_for(world.acme, user_id="w"))
    await writer.send({"type": "join", "connection_ids": [room, other]})
    first = {f["connection_id"]: f for f in await frames_until(writer, 2)}
    for n in range(3):
        await writer.send(send_frame(room, client_id=f"r{n}"))
        await writer.expect("ack", skip=("message",))

    reader = await connect(factories.token_for(world.acme, user_id="r"))
    await reader.send(
        {
            "type": "join",
            "connection_ids": [room, other],
            "since": {room: 1},
            "epoch": {room: first[room]["epoch"]},
        }
    )
    frames = await frames_until(reader, 4)
    assert [(f["type"], f.get("seq")) for f in frames] == [
        ("message", 2),  # replayed, in seq order, before the room's joined
        ("message", 3),
        ("joined", 3),
        ("joined", 0),
    ]
    assert frames[2]["recovered"] is True and frames[2]["connection_id"] == room
    assert "recovered" not in frames[3] and frames[3]["connection_id"] == other  # a plain join


async def test_a_multi_join_spends_a_control_token_per_room(world, connect, settings):
    """Each room named is a lookup: five rooms need five tokens, not one."""
    settings.CHAT_CONTROL_FRAMES_PER_SECOND = 0.01
    settings.CHAT_CONTROL_BURST = 5
    rooms = [world.room.connection_id] + [
        (await async_db(factories.room_for)(world.acme, f"R{n}")).connection_id for n in range(4)
    ]
    client = await connect(factories.token_for(world.acme))
    await client.send({"type": "join", "connection_ids": rooms})
    frames = await frames_until(client, 5)
    assert [f["connection_id"] for f in frames if f["type"] == "joined"] == rooms
    await client.send({"type": "join", "connection_ids": rooms[:1]})  # the bucket is empty
    (refused,) = await frames_until(client, 1)
    assert refused["code"] == "rate_limited" and "control frames" in refused["message"]


async def test_rooms_past_the_socket_limit_get_their_own_error(world, connect, settings):
    settings.CHAT_MAX_ROOMS_PER_SOCKET = 2
    rooms = [world.room.connection_id] + [
        (await async_db(factories.room_for)(world.acme, f"R{n}")).connection_id for n in range(2)
    ]
    client = await connect(factories.token_for(world.acme))
    await client.send({"type": "join", "connection_ids": rooms})
    frames = await frames_until(client, 3)
    assert [(f["type"], f.get("code")) for f in frames] == [
        ("joined", None),
        ("joined", None),
        ("error", "too_many_rooms"),
    ]
    assert frames[2]["connection_id"] == rooms[2]


@pytest.mark.parametrize(
    ("join", "message"),
    [
        ({}, "'join' needs either 'connection_id' or 'connection_ids'"),
        (
            {"connection_id": "R", "connection_ids": ["R"]},
            "'join' needs either 'connection_id' or 'connection_ids'",
        ),
        ({"connection_ids": []}, "'connection_ids' must list 1 to 20 rooms"),
        (
            {"connection_ids": [new_ulid() for _ in range(21)]},
            "'connection_ids' must list 1 to 20 rooms",
        ),
        ({"connection_ids": [5]}, "'connection_ids' must be strings"),
        ({"connection_ids": "R"}, "'connection_ids' must be a list"),
        (
            {"connection_ids": ["R"], "since": 3},
            "with 'connection_ids', since maps connection_id to a value",
        ),
        (
            {"connection_ids": ["R"], "since": {"S": 3}},
            "since names a room that is not in 'connection_ids'",
        ),
        ({"connection_ids": ["R"], "since": {"R": -1}}, "since must be a seq (0 or more)"),
        ({"connection_ids": ["R"], "epoch": {"R": 7}}, "epoch must be a string"),
        (
            {"connection_id": "R", "since": {"R": 3}},
            "with 'connection_id', since is a seq and epoch a string",
        ),
    ],
)
async def test_malformed_joins_are_bad_frames(world, connect, join, message):
    client = await connect(factories.token_for(world.acme))
    await client.send({"type": "join", **join})
    error = await client.expect("error")
    assert (error["code"], error["message"]) == ("bad_frame", message)
