"""Room sequence and resume (docs/protocol.md): seq, epoch, replay on join, resync, history at once.

In-process (WebsocketCommunicator); the room stream is Redis when REDIS_URL
is set (CI), in-process memory otherwise, and both must behave the same.
"""

import asyncio
import socket
import time

import pytest
import redis
from asgiref.sync import sync_to_async

from chatsvc.realtime import hub as hub_module
from chatsvc.streams import memory_stream
from tests import factories
from tests.realtime.test_bad_input import send_frame

pytestmark = pytest.mark.django_db(transaction=True)


async def post(client, room, client_id, body=None):
    await client.send(send_frame(room, client_id, body or client_id))
    return await client.expect("ack", timeout=5, skip=("message", "presence", "typing"))


async def join(client, room, **resume):
    await client.send({"type": "join", "connection_id": room, **resume})
    frames = []
    while (frame := await client.recv())["type"] != "joined":
        frames.append(frame)
    return frames, frame


def messages(frames):
    return [frame for frame in frames if frame["type"] == "message"]


def forget_room_state(settings, room):
    """What Redis losing its data (or a restart of local mode) does to a room."""
    if settings.REDIS_URL:
        redis.Redis.from_url(settings.REDIS_URL).delete(
            f"chatsvc:{{{room}}}:state", f"chatsvc:{{{room}}}:log"
        )
    else:
        memory_stream.forget_everything()


async def test_a_new_room_counts_from_one_and_joined_names_seq_and_epoch(world, connect):
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada"))
    _, joined = await join(ada, room)
    assert joined["seq"] == 0 and joined["epoch"] and "recovered" not in joined
    acks = [await post(ada, room, f"c{n}") for n in range(3)]
    assert [ack["seq"] for ack in acks] == [1, 2, 3]
    assert [a["id"] for a in acks] == sorted(a["id"] for a in acks)  # id order is seq order
    _, again = await join(ada, room)  # already in the room: nothing to replay
    assert again["seq"] == 3 and again["epoch"] == joined["epoch"]


async def test_rejoining_with_since_replays_what_was_missed_then_goes_live(world, connect):
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada"), room=room)
    bob = await connect(factories.token_for(world.acme, user_id="bob"))
    _, first = await join(bob, room)
    await post(ada, room, "before")
    assert (await bob.expect("message"))["seq"] == 1
    await bob.close()  # bob's connection drops
    for n in range(3):
        await post(ada, room, f"missed{n}")

    bob = await connect(factories.token_for(world.acme, user_id="bob"))
    replayed, joined = await join(bob, room, since=1, epoch=first["epoch"])
    assert [(f["type"], f["seq"], f["body"]) for f in replayed] == [
        ("message", 2, "missed0"),
        ("message", 3, "missed1"),
        ("message", 4, "missed2"),
    ]
    assert joined == {
        "type": "joined",
        "connection_id": room,
        "seq": 4,
        "epoch": first["epoch"],
        "recovered": True,
        "members": [
            {"id": "ada", "name": "Ada", "role": "member"},
            {"id": "bob", "name": "Ada", "role": "member"},
        ],
        "member_count": 2,
    }
    await post(ada, room, "live")
    live = await bob.expect("message")
    assert (live["seq"], live["body"]) == (5, "live")
    assert messages(await bob.drain()) == []  # nothing twice


async def test_resume_is_refused_for_another_epoch_or_outside_the_window(world, connect, settings):
    settings.CHAT_REPLAY_MESSAGES = 2
    settings.CHAT_REPLAY_SECONDS = 0
    settings.CHAT_REPLAY_MAX_MESSAGES = 2
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada"))
    _, first = await join(ada, room)
    for n in range(5):
        await post(ada, room, f"m{n}")

    bob = await connect(factories.token_for(world.acme, user_id="bob"))
    # Presence chatter may arrive before `joined` (ada's own `presence joined`, still in
    # flight on a loaded machine); what matters is that no message is replayed.
    replayed, joined = await join(bob, room, since=0, epoch=first["epoch"])  # 1..3 trimmed
    assert messages(replayed) == [] and joined["recovered"] is False and joined["seq"] == 5
    carol = await connect(factories.token_for(world.acme, user_id="carol"))
    replayed, joined = await join(carol, room, since=4, epoch="another-epoch")
    assert messages(replayed) == [] and joined["recovered"] is False
    dave = await connect(factories.token_for(world.acme, user_id="dave"))
    replayed, joined = await join(dave, room, since=3, epoch=first["epoch"])  # 4, 5 still held
    assert [f["seq"] for f in messages(replayed)] == [4, 5] and joined["recovered"] is True


@pytest.mark.parametrize("frame", [{"since": -1}, {"since": "3"}, {"epoch": "x" * 65}])
async def test_bad_resume_fields_are_bad_frames(world, connect, frame):
    ada = await connect(factories.token_for(world.acme))
    await ada.send({"type": "join", "connection_id": world.room.connection_id, **frame})
    assert (await ada.expect("error"))["code"] == "bad_frame"


async def test_lost_stream_state_tells_live_members_to_resync(world, connect, settings):
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada"))
    _, first = await join(ada, room)
    bob = await connect(factories.token_for(world.acme, user_id="bob"), room=room)
    await post(bob, room, "one")
    assert (await ada.expect("message"))["seq"] == 1

    forget_room_state(settings, room)
    await bob.send(send_frame(room, "two", "two"))
    left = await ada.expect("left")
    assert left == {"type": "left", "connection_id": room, "reason": "resync"}
    _, joined = await join(ada, room, since=1, epoch=first["epoch"])
    assert joined["recovered"] is False and joined["epoch"] != first["epoch"]
    assert joined["seq"] > 1_000_000  # a new epoch starts above every earlier seq


async def test_history_has_acknowledged_messages_before_the_worker_stores_them(
    world, connect, client
):
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada"), room=room)
    acks = [await post(ada, room, f"m{n}") for n in range(3)]  # no worker runs in this test

    late = await connect(factories.token_for(world.acme, user_id="late"), room=room)
    await late.send({"type": "history", "connection_id": room, "limit": 2})
    page = await late.expect("history")
    assert [(m["id"], m["seq"]) for m in page["messages"]] == [
        (acks[2]["id"], 3),
        (acks[1]["id"], 2),
    ]
    assert page["next"] == acks[1]["id"]
    headers = {"Authorization": f"Bearer {world.acme.api_key}"}
    response = await sync_to_async(client.get)(
        f"/api/v1/connections/{room}/messages?before={page['next']}", headers=headers
    )
    assert [m["body"] for m in response.json()["messages"]] == ["m0"]
    assert response.json()["next"] is None


class BlackHole:
    """A TCP endpoint that accepts and never answers: SQS hung."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.listen(100)
        self.endpoint = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.queue_url = f"{self.endpoint}/000000000000/hung"

    def close(self):
        self.server.close()


async def test_hung_sqs_gets_not_stored_in_time_then_overloaded_and_loses_nothing(
    world, connect, settings
):
    settings.CHAT_SEND_DEADLINE_SECONDS = 1
    settings.CHAT_SEND_BACKLOG = 2
    room = world.room.connection_id
    working = settings.AWS_ENDPOINT_URL, settings.CHAT_QUEUE_URL
    hole = BlackHole()
    settings.AWS_ENDPOINT_URL, settings.CHAT_QUEUE_URL = hole.endpoint, hole.queue_url
    try:
        ada = await connect(factories.token_for(world.acme, user_id="ada"), room=room)
        bob = await connect(factories.token_for(world.acme, user_id="bob"), room=room)
        started = time.monotonic()
        for client_id in ("a", "b", "c"):
            await ada.send(send_frame(room, client_id, client_id))
        errors = {}
        while len(errors) < 3:
            frame = await ada.expect("error", timeout=5, skip=("message", "presence"))
            errors[frame["ref"]] = frame["code"]
        assert sorted(errors.values()) == ["not_stored", "not_stored", "overloaded"]
        assert time.monotonic() - started < 3  # the deadline, not a 30 s hang
        [refused] = [ref for ref, code in errors.items() if code == "overloaded"]
        shown = sorted(m["body"] for m in messages(await bob.drain()))
        assert shown == sorted({"a", "b", "c"} - {refused})  # the refused one never existed
    finally:
        hole.close()
        settings.AWS_ENDPOINT_URL, settings.CHAT_QUEUE_URL = working

    stored = next(ref for ref, code in errors.items() if code == "not_stored")
    resent = await post(ada, room, stored)  # SQS is back: same client_id, same message
    assert resent["seq"] in (1, 2)
    assert messages(await bob.drain()) == []  # not shown a second time


async def test_redis_outage_is_unavailable_and_the_socket_stays(
    world, connect, settings, monkeypatch
):
    monkeypatch.setattr(hub_module, "SYNC_TIMEOUT_SECONDS", 0.5)
    dead = socket.create_server(("127.0.0.1", 0))
    settings.REDIS_URL = f"redis://127.0.0.1:{dead.getsockname()[1]}/0"
    dead.close()
    ada = await connect(factories.token_for(world.acme, user_id="ada"))
    await ada.send({"type": "join", "connection_id": world.room.connection_id})
    error = await ada.expect("error", timeout=5)
    assert error["code"] == "unavailable" and error["ref"] == world.room.connection_id
    await ada.send({"type": "ping"})
    assert (await ada.expect("pong"))["type"] == "pong"
    await asyncio.sleep(0)
