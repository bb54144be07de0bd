"""Caps on sockets: per user (all processes, via Redis when configured) and per
unauthenticated client address."""

import pytest

from tests import factories
from tests.realtime.test_bad_input import set_limits

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_user_holds_at_most_the_tenants_socket_cap(world, connect):
    await set_limits(world.acme.tenant, max_sockets_per_user=2)
    token = factories.token_for(world.acme, user_id="ada")
    first, second = await connect(token), await connect(token)
    third = await connect()
    await third.send({"type": "auth", "token": token})
    error = await third.recv()
    assert error["type"] == "error" and error["code"] == "too_many_sockets"
    assert await third.recv() == {"type": "__closed__", "code": 4409}

    await connect(factories.token_for(world.acme, user_id="bob"))  # others are not affected
    await first.close()
    again = await connect()
    assert (await again.auth(token))["type"] == "ready"  # a place came free
    await second.send({"type": "ping"})
    assert (await second.expect("pong"))["type"] == "pong"


async def test_an_address_holds_few_unauthenticated_sockets(world, connect, settings):
    settings.CHAT_MAX_UNAUTHENTICATED_PER_ADDRESS = 2
    waiting = [await connect(), await connect()]
    extra = await connect()
    assert await extra.recv() == {"type": "__closed__", "code": 4429}
    await waiting[0].auth(factories.token_for(world.acme))  # signed in: no longer counted
    late = await connect()
    await late.send({"type": "ping"})  # still open: it gets its first-frame error
    assert (await late.recv())["code"] == "not_authenticated"
