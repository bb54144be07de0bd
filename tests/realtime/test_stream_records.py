"""Message records in both room streams (Redis's Lua and the in-process one): the
same contract for `apply`, `react`, `find` and `recent`."""

import asyncio
import json

import pytest

from chatsvc.core.ulid import new_ulid
from chatsvc.streams import Change, Reaction, RecordChanged, Refused, Window, memory_stream
from chatsvc.streams.redis_stream import RedisRoomStream

WINDOW = Window(keep_messages=100, keep_seconds=60, max_messages=1000, sent_ttl_seconds=60)


@pytest.fixture(params=["memory", "redis"])
async def stream(request):
    if request.param == "memory":
        memory_stream.forget_everything()
        yield memory_stream.MemoryRoomStream(window=WINDOW)
        return
    stream = RedisRoomStream(url=request.getfixturevalue("redis_url"), window=WINDOW)
    yield stream
    await stream.close()


async def post(stream, room, body="hi"):
    """A message frame as chatsvc.messaging.actions posts it (seq from the room's epoch)."""
    head = '{"type":"message","connection_id":"' + room + '",'
    tail = (
        f',"sender":{{"id":"ada","name":"Ada"}},"body":"{body}","ts":"2026-01-01T00:00:00.000Z"}}'
    )
    appended = await stream.append(
        connection_id=room, sent_key=new_ulid(), message_id=new_ulid(), head=head, tail=tail
    )
    return json.loads(appended.frame)


def change(
    room, message_id, *, version="0", seed=None, key=None, state=None, seq_fields=(), **fields
):
    return Change(
        connection_id=room,
        message_id=message_id,
        sent_key=key or new_ulid(),
        event_id=new_ulid(),
        head='{"type":"message_edited","connection_id":"' + room + '",',
        tail=',"message_id":"' + message_id + '"}',
        version=version,
        seed=seed,
        fields=fields,
        seq_fields=seq_fields,
        state=state,
    )


def reaction(room, message_id, user_id, emoji="👍", *, seed=None, kinds=20, most=1000, key=None):
    return Reaction(
        connection_id=room,
        message_id=message_id,
        sent_key=key or new_ulid(),
        event_id=new_ulid(),
        head='{"type":"reaction","connection_id":"' + room + '",',
        tail=',"message_id":"' + message_id + '"',
        seed=seed,
        emoji=emoji,
        user_id=user_id,
        max_kinds=kinds,
        max_reactions=most,
        shown=2,
    )


async def test_apply_seeds_a_missing_record_and_checks_its_version(stream):
    room = new_ulid()
    message = await post(stream, room)
    with pytest.raises(RecordChanged):  # no record and no seed
        await stream.apply(change(room, message["id"], body="x"))
    seed = {"sender": "ada", "ts": message["ts"]}
    applied = await stream.apply(
        change(room, message["id"], seed=seed, body="edited", seq_fields=("body_rev",))
    )
    assert applied.new and applied.seq == message["seq"] + 1
    record = await stream.record(room, message["id"])
    assert record == {**seed, "body": "edited", "body_rev": str(applied.seq), "ver": "1"}
    with pytest.raises(RecordChanged):  # computed from version 0: stale now
        await stream.apply(change(room, message["id"], body="lost"))
    deleted = await stream.apply(change(room, message["id"], version="1", body=False, deleted="1"))
    assert deleted.seq == applied.seq + 1
    assert "body" not in await stream.record(room, message["id"])


async def test_a_resent_change_returns_its_first_frame_and_changes_nothing(stream):
    room = new_ulid()
    message = await post(stream, room)
    seed = {"sender": "ada", "ts": message["ts"]}
    first = await stream.apply(change(room, message["id"], seed=seed, key="k", body="a"))
    again = await stream.apply(change(room, message["id"], version="1", key="k", body="b"))
    assert (again.new, again.seq, again.frame) == (False, first.seq, first.frame)
    assert (await stream.record(room, message["id"]))["body"] == "a"


async def test_concurrent_reactions_all_apply_in_one_dense_run(stream):
    room = new_ulid()
    message = await post(stream, room)
    seed = {"sender": "ada", "ts": message["ts"]}
    reacted = await asyncio.gather(
        *(stream.react(reaction(room, message["id"], f"u{n}", seed=seed)) for n in range(30))
    )
    start = message["seq"] + 1
    assert sorted(r.appended.seq for r in reacted) == list(range(start, start + 30))
    last = max(reacted, key=lambda r: r.appended.seq)
    frame = json.loads(last.appended.frame)
    assert frame["added"] is True and frame["reactions"][0]["count"] == 30
    assert len(frame["reactions"][0]["user_ids"]) == 2  # `shown` bounds the list, not the count
    assert len(last.reactions[0]["user_ids"]) == 30

    again = await stream.react(reaction(room, message["id"], "u0"))
    assert json.loads(again.appended.frame)["added"] is False
    assert len(again.reactions[0]["user_ids"]) == 29 and "u0" not in again.reactions[0]["user_ids"]


async def test_reaction_bounds_and_deleted_messages_are_refused(stream):
    room = new_ulid()
    message = await post(stream, room)
    seed = {"sender": "ada", "ts": message["ts"]}
    await stream.react(reaction(room, message["id"], "a", "1", seed=seed, kinds=2, most=3))
    await stream.react(reaction(room, message["id"], "a", "2", kinds=2, most=3))
    with pytest.raises(Refused) as refused:
        await stream.react(reaction(room, message["id"], "a", "3", kinds=2, most=3))
    assert refused.value.code == "too_many_kinds"
    await stream.react(reaction(room, message["id"], "b", "2", kinds=2, most=3))
    with pytest.raises(Refused) as refused:
        await stream.react(reaction(room, message["id"], "c", "1", kinds=2, most=3))
    assert refused.value.code == "too_many_reactions"
    record = await stream.record(room, message["id"])
    await stream.apply(change(room, message["id"], version=record["ver"], deleted="1"))
    with pytest.raises(Refused) as refused:
        await stream.react(reaction(room, message["id"], "b", "1"))
    assert refused.value.code == "message_deleted"


async def test_find_and_recent_see_messages_only(stream):
    room = new_ulid()
    first = await post(stream, room, "one")
    seed = {"sender": "ada", "ts": first["ts"]}
    event = await stream.apply(change(room, first["id"], seed=seed, body="1"))
    second = await post(stream, room, "two")
    assert (await stream.find(room, first["id"])).frame.startswith('{"type":"message",')
    assert await stream.find(room, json.loads(event.frame)["id"]) is None
    assert await stream.find(room, new_ulid()) is None
    recent = await stream.recent(room, before=None, limit=2)
    assert [entry.id for entry in recent] == [first["id"], second["id"]]
    tail = await stream.tail(room, first["seq"])
    assert tail.entries[0].frame == event.frame  # resume replays it


async def test_read_positions_count_messages_not_events_and_never_move_back(stream):
    room, tenant = new_ulid(), new_ulid()
    first = await post(stream, room)
    seed = {"sender": "ada", "ts": first["ts"]}
    await stream.apply(change(room, first["id"], seed=seed, body="edited"))  # an event
    second = await post(stream, room)
    third = await post(stream, room)

    mark = await stream.mark_read(room, tenant_id=tenant, user_id="bob", seq=first["seq"] + 1)
    assert (mark.moved, mark.seq) == (True, first["seq"] + 1)
    [unread] = await stream.unread(tenant_id=tenant, user_id="bob")
    assert (unread.connection_id, unread.unread) == (room, 2)  # second and third

    back = await stream.mark_read(room, tenant_id=tenant, user_id="bob", seq=first["seq"])
    assert (back.moved, back.seq) == (False, first["seq"] + 1)
    end = await stream.mark_read(room, tenant_id=tenant, user_id="bob", seq=10**18)
    assert end.seq == third["seq"]
    assert (await stream.unread(tenant_id=tenant, user_id="bob"))[0].unread == 0
    assert second["seq"] < third["seq"]

    # Another user never read it: everything is unread; an unknown room has nothing.
    other = await stream.unread(tenant_id=tenant, user_id="cy", connection_ids=[room, new_ulid()])
    assert [(u.unread, u.last_read_seq) for u in other] == [(3, None), (0, None)]


async def test_a_claimed_change_keeps_its_state_for_resends(stream):
    room = new_ulid()
    message = await post(stream, room)
    seed = {"sender": "ada", "ts": message["ts"]}
    kept = {"state": {"body": "x"}, "expires_at": 123}
    await stream.apply(change(room, message["id"], seed=seed, key="k", body="x", state=kept))
    first = await stream.first(room, "k")
    assert json.loads(first.state) == kept
    await stream.react(reaction(room, message["id"], "u1", key="r"))
    first = await stream.first(room, "r")
    assert json.loads(first.state)["state"]["reactions"] == [{"emoji": "👍", "user_ids": ["u1"]}]


async def test_records_seeded_for_a_refused_change_still_expire(redis_url):
    import redis

    stream = RedisRoomStream(url=redis_url, window=WINDOW)
    room = new_ulid()
    message = await post(stream, room)
    seed = {"sender": "ada", "ts": message["ts"], "deleted": "1"}
    with pytest.raises(Refused):
        await stream.react(reaction(room, message["id"], "u1", seed=seed))
    key = f"chatsvc:{{{room}}}:m:{message['id']}"
    assert 0 < redis.Redis.from_url(redis_url).ttl(key)
    await stream.mark_read(room, tenant_id="t", user_id="u", seq=1)
    assert 0 < redis.Redis.from_url(redis_url).ttl(f"chatsvc:{{{room}}}:state")
    await stream.close()


class Confirmations:
    """A stream listener that records which rooms' subscriptions were confirmed."""

    def __init__(self):
        self.confirmed = set()

    def on_subscribed(self, connection_id):
        self.confirmed.add(connection_id)

    async def on_frame(self, connection_id, seq, frame):
        pass

    async def on_event(self, connection_id, payload):
        pass


async def test_rooms_subscribed_at_once_on_a_new_stream_all_confirm(redis_url):
    """A drain's reconnect storm: the first joins of a fresh process subscribe many
    rooms before the stream's connection exists; every room must hear back (one
    connection, read by the stream), none on a connection nobody reads."""
    stream = RedisRoomStream(url=redis_url, window=WINDOW)
    listener = Confirmations()
    stream.listen(listener)
    first, *others = [new_ulid() for _ in range(200)]
    rooms = {first, *others}
    try:
        await stream.subscribe(first)
        await asyncio.sleep(0)  # the stream starts connecting; more joins come meanwhile
        await asyncio.gather(*(stream.subscribe(room) for room in others))
        async with asyncio.timeout(5):
            while listener.confirmed != rooms:
                await asyncio.sleep(0.02)
    finally:
        await stream.close()


async def test_a_command_on_a_closed_subscription_reconnects_instead_of_raising(redis_url):
    """Thousands of sockets leaving at once while the subscription is being closed
    (a lost connection, a shutdown): redis-py then fails with AttributeError, not a
    connection error. Leaving must not fail, and the reader subscribes again."""
    stream = RedisRoomStream(url=redis_url, window=WINDOW)
    listener = Confirmations()
    stream.listen(listener)
    kept, left, later = new_ulid(), new_ulid(), new_ulid()
    try:
        await stream.subscribe(kept)
        await stream.subscribe(left)
        async with asyncio.timeout(5):
            while listener.confirmed != {kept, left}:
                await asyncio.sleep(0.02)
        await stream._pubsub.connection.disconnect()  # its writer is gone
        await stream.unsubscribe(left)  # no exception
        await stream.subscribe(later)
        listener.confirmed.clear()
        async with asyncio.timeout(5):  # subscribed again on a new connection
            while not {kept, later} <= listener.confirmed:
                await asyncio.sleep(0.02)
        assert left not in listener.confirmed
    finally:
        await stream.close()
