"""Two real server processes sharing one Redis, real WebSocket clients."""

import asyncio
import signal

import pytest
import websockets

from tests import factories
from tests.realtime.multiprocess import Peer

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def chat(start_server):
    issued = factories.tenant_with_key("acme", messages_per_second=100, max_sockets_per_user=1000)
    room = factories.room_for(issued).connection_id
    return issued, room, start_server(), start_server()


async def test_servers_deliver_to_each_others_clients(chat):
    issued, room, first, second = chat
    ada = await Peer.open(first, factories.token_for(issued, user_id="ada"), room)
    bob = await Peer.open(second, factories.token_for(issued, user_id="bob"), room)

    await ada.send({"type": "send", "connection_id": room, "client_id": "1", "body": "from 1"})
    assert (await bob.expect("message", body="from 1"))["sender"]["id"] == "ada"
    await bob.send({"type": "send", "connection_id": room, "client_id": "2", "body": "from 2"})
    assert (await ada.expect("message", body="from 2"))["sender"]["id"] == "bob"
    assert (await bob.expect("ack"))["client_id"] == "2"


async def test_idle_sockets_still_get_messages_after_mass_disconnects(chat):
    """Idle longer than the layer's 5 s blocking read, after 150 sockets left at once."""
    issued, room, first, second = chat
    token = factories.token_for(issued, user_id="idle")
    idle = [await Peer.open(server, token, room) for server in (first, second, first, second)]
    crowd = await asyncio.gather(
        *(Peer.open(first if i % 2 else second, token, room) for i in range(150))
    )
    await asyncio.gather(*(peer.socket.close() for peer in crowd))

    await asyncio.sleep(12)

    speaker = await Peer.open(second, factories.token_for(issued, user_id="late"), room)
    await speaker.send({"type": "send", "connection_id": room, "client_id": "x", "body": "wake"})
    for peer in idle:
        assert (await peer.expect("message", body="wake"))["sender"]["id"] == "late"


async def test_sigterm_closes_sockets_1012_and_flushes_the_queue(chat, aws):
    from tests.realtime.conftest import queued_bodies

    issued, room, first, _ = chat
    ada = await Peer.open(first, factories.token_for(issued, user_id="ada"), room)
    for n in range(20):
        await ada.send(
            {"type": "send", "connection_id": room, "client_id": f"m{n}", "body": str(n)}
        )
    await ada.expect("message", body="19")
    first.process.send_signal(signal.SIGTERM)

    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ada.expect("never", timeout=10)
    assert closed.value.rcvd.code == 1012
    assert await asyncio.to_thread(first.process.wait, 20) == 0
    assert sorted(m["body"] for m in queued_bodies(aws)) == sorted(str(n) for n in range(20))


async def test_a_real_server_closes_oversized_frames_with_1009(chat):
    issued, room, first, _ = chat
    ada = await Peer.open(first, factories.token_for(issued, user_id="ada"), room)
    await ada.send({"type": "send", "connection_id": room, "client_id": "big", "body": "x" * 20000})
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ada.expect("never", timeout=10)
    assert closed.value.rcvd.code == 1009


@pytest.mark.parametrize("authenticated", [False, True])
async def test_frames_above_the_servers_hard_cap_close_1009_not_drop(chat, authenticated):
    """2 MiB is 8 x the pre-auth limit: Autobahn refuses it before the consumer sees it."""
    issued, room, first, _ = chat
    if authenticated:
        socket = (await Peer.open(first, factories.token_for(issued), room)).socket
    else:
        socket = await websockets.connect(first.ws_url)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await socket.send("x" * (2 * 1024 * 1024))
        async with asyncio.timeout(10):
            while True:
                await socket.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
