"""Auth and join read keys, revocations and rooms from each process's cache
(chatsvc/realtime/directory.py): no database query on a hit, and a change
reaches every process at once, long before the entry would expire.

Across processes: real `manage.py serve` processes sharing PostgreSQL and
Redis, with a cache lifetime of 10 minutes so only the published change can
explain a refusal; the change is made in this process, as the admin or the
REST API would make it in theirs.
"""

import asyncio
import time

import pytest
import websockets
from django.utils import timezone

from chatsvc.realtime import directory, tokens
from chatsvc.rooms.models import RoomMute, RoomRemoval, UserRevocation
from chatsvc.rooms.services import close_room
from chatsvc.tenants.services import revoke_key
from tests import factories
from tests.realtime import multiprocess
from tests.realtime.conftest import async_db
from tests.realtime.multiprocess import Peer

pytestmark = pytest.mark.django_db(transaction=True)

LONG_LIFE = {"CHAT_LOOKUP_CACHE_SECONDS": 600}


def test_a_cached_key_authenticates_without_a_query(world, django_assert_num_queries):
    token = factories.token_for(world.acme, user_id="ada")
    with pytest.raises(directory.Missing):
        tokens.authenticate(token, directory.CACHED)
    tokens.authenticate(token, directory.LOADING)
    with django_assert_num_queries(0):
        user = tokens.authenticate(token, directory.CACHED)
    assert (user.id, user.tenant.id) == ("ada", world.acme.tenant.id)


def test_another_tenants_cached_room_is_no_such_room(world, django_assert_num_queries):
    room = world.other_room.connection_id
    directory.LOADING.admission(world.other.tenant.id, room, "ada")  # cached, by its tenant
    with django_assert_num_queries(0):
        admission = directory.CACHED.admission(world.acme.tenant.id, room, "ada")
    assert admission.room is None


def test_a_change_in_this_process_is_forgotten_before_it_commits(world):
    token = factories.token_for(world.acme, user_id="ada")
    tokens.authenticate(token, directory.LOADING)
    revoke_key(key=world.acme.key)
    with pytest.raises(directory.Missing):
        tokens.authenticate(token, directory.CACHED)
    with pytest.raises(tokens.TokenRejected, match="revoked key"):
        tokens.authenticate(token, directory.LOADING)


@pytest.fixture
def start_server(transactional_db, redis_url, aws, tmp_path):
    yield from multiprocess.servers(redis_url=redis_url, aws=aws, tmp_path=tmp_path)


async def refused_close(server, token) -> int | None:
    """Open a socket with `token`: the close code of its refusal (None: `ready`)."""
    peer = Peer(await multiprocess.websockets.connect(server.ws_url))
    await peer.send({"type": "auth", "token": token})
    try:
        while (await peer.recv())["type"] != "ready":
            pass
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code
    await peer.close()
    return None


async def soon(attempt, seconds=5.0):
    """`attempt()` (an answer) until it is truthy: a change travels over pub/sub in
    milliseconds, and a socket opened right after the commit may beat it."""
    deadline = time.monotonic() + seconds
    while not (answer := await attempt()) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return answer


async def error_code(server, token, frames) -> str | None:
    """Open a socket, send `frames`: the code of the first error (None: none came)."""
    peer = await Peer.open(server, token)
    try:
        for frame in frames:
            await peer.send(frame)
        async with asyncio.timeout(5):
            while (frame := await peer.recv())["type"] not in ("error", "ack"):
                pass
        return frame.get("code")
    finally:
        await peer.close()


async def test_a_revoked_key_or_disabled_tenant_stops_authenticating_everywhere_at_once(
    start_server, world
):
    servers = [start_server(**LONG_LIFE), start_server(**LONG_LIFE)]
    token = factories.token_for(world.acme, user_id="ada")
    for server in servers:  # each caches the key
        await (await Peer.open(server, token)).close()

    await async_db(revoke_key)(key=world.acme.key)
    for server in servers:
        assert await soon(lambda s=server: refused_close(s, token)) == tokens.CLOSE_BAD_TOKEN

    other = factories.token_for(world.other, user_id="bob")
    for server in servers:
        await (await Peer.open(server, other)).close()
    tenant = world.other.tenant
    tenant.is_active = False
    await async_db(tenant.save)()
    for server in servers:
        assert await soon(lambda s=server: refused_close(s, other)) == tokens.CLOSE_FORBIDDEN


async def test_closed_rooms_removals_mutes_and_revocations_reach_cached_joins(start_server, world):
    server = start_server(**LONG_LIFE)
    room = world.room.connection_id
    ada_token = factories.token_for(world.acme, user_id="ada")
    ada = await Peer.open(server, ada_token, room)  # the room and revocations are cached
    await ada.close()

    join = {"type": "join", "connection_id": room}
    send = {"type": "send", "connection_id": room, "client_id": "m1", "body": "hi"}

    def code_of(token, *frames):
        return lambda: error_code(server, token, frames)

    until = timezone.now() + timezone.timedelta(minutes=5)
    await async_db(RoomMute.objects.create)(room=world.room, user_id="ada", until=until)
    assert await soon(code_of(ada_token, join, send)) == "muted"

    await async_db(RoomRemoval.objects.create)(room=world.room, user_id="ada")
    assert await soon(code_of(ada_token, join)) == "removed"

    bob_token = factories.token_for(world.acme, user_id="bob")
    await (await Peer.open(server, bob_token, room)).close()
    await async_db(UserRevocation.objects.create)(tenant=world.acme.tenant, user_id="bob")
    assert await soon(lambda: refused_close(server, bob_token)) == tokens.CLOSE_BAD_TOKEN

    await async_db(close_room)(room=world.room)
    carol_token = factories.token_for(world.acme, user_id="carol")
    assert await soon(code_of(carol_token, join)) == "room_closed"


async def test_a_change_that_bypasses_signals_lasts_only_the_cache_lifetime(start_server, world):
    """QuerySet.update() publishes nothing: the entry expires after its lifetime."""
    server = start_server(CHAT_LOOKUP_CACHE_SECONDS=1)
    token = factories.token_for(world.acme, user_id="ada")
    await (await Peer.open(server, token)).close()
    key = world.acme.key
    await async_db(type(key).objects.filter(pk=key.pk).update)(revoked_at=timezone.now())
    await asyncio.sleep(1.2)
    started = time.monotonic()
    assert await refused_close(server, token) == tokens.CLOSE_BAD_TOKEN
    assert time.monotonic() - started < 5


def test_rooms_missing_the_cache_together_cost_one_set_of_queries(
    world, settings, monkeypatch, django_assert_num_queries
):
    monkeypatch.setattr(directory, "MAX_LISTED", 2)
    rooms = [factories.room_for(world.acme) for _ in range(6)]
    quiet, banned, muted, crowded = (room.connection_id for room in rooms[:4])
    later = timezone.now() + timezone.timedelta(hours=1)
    RoomRemoval.objects.create(room_id=banned, user_id="ada", until=None)
    over = timezone.now() - timezone.timedelta(hours=1)
    RoomRemoval.objects.create(room_id=banned, user_id="bob", until=over)
    RoomMute.objects.create(room_id=muted, user_id="ada", until=later)
    for user in ("u1", "u2", "u3"):
        RoomMute.objects.create(room_id=crowded, user_id=user, until=later)
    missing = "01" + "Z" * 24
    wanted = [room.connection_id for room in rooms] + [missing]

    with django_assert_num_queries(5):  # rooms; removals and mutes: counts, then rows
        found = directory.LOADING.rooms(wanted)

    assert found[missing] is None and found[crowded] is directory.TOO_MANY
    assert found[quiet].removed_until == {} and found[quiet].muted_until == {}
    assert found[banned].removed_until == {"ada": None}  # bob's removal is over
    assert found[muted].muted_until == {"ada": later.timestamp()}
    with django_assert_num_queries(0):  # cached, each
        assert directory.CACHED.admission(world.acme.tenant.id, banned, "ada").removed
        assert directory.CACHED.admission(world.acme.tenant.id, muted, "ada").muted_until
        with pytest.raises(directory.Missing):  # too many to keep: asks the database
            directory.CACHED.admission(world.acme.tenant.id, crowded, "u1")
    crowded_admission = directory.LOADING.admission(world.acme.tenant.id, crowded, "u1")
    assert crowded_admission.muted_until == later.timestamp()
    assert directory.LOADING.admission(world.other.tenant.id, quiet, "ada").room is None


async def test_joins_that_miss_the_cache_at_once_are_looked_up_together(world, monkeypatch):
    rooms = [await async_db(factories.room_for)(world.acme) for _ in range(5)]
    tenant = world.acme.tenant.id
    fetched = []
    load = directory.LOADING.rooms

    def counting(connection_ids):
        fetched.append(len(connection_ids))
        return load(connection_ids)

    monkeypatch.setattr(directory.LOADING, "rooms", counting)
    directory._room_fills.pop()  # this loop's coalescer, made anew with the counting fill
    admissions = await asyncio.gather(
        *(directory.admission(tenant, room.connection_id, "ada") for room in rooms)
    )
    assert [a.room.connection_id for a in admissions] == [r.connection_id for r in rooms]
    assert fetched == [5]
