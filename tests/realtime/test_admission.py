"""Admission (chatsvc.realtime.admission): at most CHAT_ADMISSION_CONCURRENCY sockets
of a process authenticate or join at once; the rest wait their turn, and one that
waits too long gets `overloaded` with a retry hint instead of a late answer."""

import asyncio

import pytest

from chatsvc.realtime import admission
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


async def test_the_gate_runs_at_most_its_limit_at_once():
    gate = admission.Gate(2, wait_seconds=5)
    running, most = 0, 0

    async def work():
        nonlocal running, most
        async with gate.turn():
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.01)
            running -= 1

    await asyncio.gather(*(work() for _ in range(10)))
    assert most == 2


async def test_a_socket_that_waits_too_long_is_told_to_come_back_later():
    gate = admission.Gate(1, wait_seconds=0.1)
    async with gate.turn():
        with pytest.raises(admission.Busy) as busy:
            async with gate.turn():
                pass
    assert 50 <= busy.value.retry_after_ms <= 150  # jittered around the wait
    async with gate.turn():  # free again
        pass


async def test_no_limit_means_no_gate():
    gate = admission.Gate(0, wait_seconds=0.01)
    async with gate.turn(), gate.turn():
        pass


@pytest.fixture
def narrow(settings):
    settings.CHAT_ADMISSION_CONCURRENCY = 1
    settings.CHAT_ADMISSION_WAIT_SECONDS = 0.3
    return admission


async def test_auth_waits_its_turn_and_then_is_refused_with_1013(world, connect, narrow):
    client = await connect()
    async with narrow.turn():  # a storm holds every turn
        await client.send({"type": "auth", "token": factories.token_for(world.acme)})
        error = await client.expect("error", timeout=3)
        assert error["code"] == "overloaded" and error["retry_after_ms"] > 0
        await client.expect_closed(1013)


async def test_a_join_that_gets_no_turn_names_each_room(world, connect, narrow):
    room = world.room.connection_id
    client = await connect(factories.token_for(world.acme, user_id="ada"))
    async with narrow.turn():
        await client.send({"type": "join", "connection_ids": [room]})
        error = await client.expect("error", timeout=3)
    assert (error["code"], error["connection_id"]) == ("overloaded", room)
    assert error["retry_after_ms"] > 0
    await client.send({"type": "join", "connection_id": room})  # once the storm passed
    assert (await client.expect("joined"))["connection_id"] == room


async def test_a_waiting_auth_is_not_cut_by_the_auth_deadline(world, connect, narrow, settings):
    settings.CHAT_AUTH_TIMEOUT_SECONDS = 0.1  # the auth frame itself came in time
    settings.CHAT_ADMISSION_WAIT_SECONDS = 1
    client = await connect()
    async with narrow.turn():
        await client.send({"type": "auth", "token": factories.token_for(world.acme)})
        await asyncio.sleep(0.3)
    assert (await client.expect("ready"))["type"] == "ready"
