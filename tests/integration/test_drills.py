"""Zero-loss delivery under faults: two web processes, a private Redis, resuming clients.

Each drill runs a steady conversation and injects one fault (bench/drills.py
prints the same numbers at larger sizes). Every acknowledged message must be
stored and reach every client exactly once after de-duplication by id.
"""

import asyncio
import json

import pytest
import websockets

from chatsvc.aws import clients
from tests import factories
from tests.drills import Stack, run_drill
from tests.servers import server_env
from tests.worker.conftest import room_ids

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def stack(postgres_url, redis_url, aws, tmp_path):
    env = server_env(database_url=postgres_url, redis_url=None, aws=aws)
    stack = Stack.start(env=env, directory=tmp_path)
    yield stack
    stack.stop()


@pytest.fixture
def chat(stack, settings):
    settings.REDIS_URL = stack.redis.url  # the room's sequence starts in the drill's Redis
    issued = factories.tenant_with_key("drill", messages_per_second=100)
    room = factories.room_for(issued).connection_id
    tokens = [factories.token_for(issued, user_id=f"user{n}") for n in range(8)]
    return room, tokens


@pytest.mark.parametrize("fault", ["pubsub_kill", "redis_restart", "sigterm", "sigkill"])
async def test_no_acknowledged_message_is_missed_or_lost(fault, stack, chat, aws):
    room, tokens = chat

    def stored_ids():
        return room_ids(clients.dynamodb(), aws.table, room)

    result = await run_drill(fault, stack=stack, tokens=tokens, room=room, stored_ids=stored_ids)
    print(result.line())
    assert result.acked == result.sent > 0
    assert result.acked_but_lost == 0
    assert result.missing_deliveries == 0
    assert result.longest_gap_ms < 2000
    if fault in ("pubsub_kill", "redis_restart"):
        # The sockets stayed open: the servers resubscribed and repaired the stream.
        assert result.seq_jumps == 0 and result.closes == {}
        for server in stack.servers:
            assert "subscription lost" in server.log_path.read_text()
    if fault == "sigterm":
        assert result.closes.get("1012", 0) >= len(tokens) // 2 - 1
        assert result.resumed >= 1


async def test_the_first_send_after_an_idle_redis_restart_succeeds(stack, chat):
    """Pooled connections Redis dropped while idle reconnect without failing a send."""
    room, tokens = chat
    async with websockets.connect(stack.servers[0].ws_url) as socket:
        await socket.send(json.dumps({"type": "auth", "token": tokens[0]}))
        await socket.send(json.dumps({"type": "join", "connection_id": room}))
        frames = [json.loads(await socket.recv()) for _ in range(2)]
        assert [f["type"] for f in frames] == ["ready", "joined"]
        send = {"type": "send", "connection_id": room, "client_id": "warm", "body": "before"}
        await socket.send(json.dumps(send))
        await _next(socket, "ack")

        await asyncio.to_thread(stack.redis.restart)  # no traffic meanwhile

        await socket.send(json.dumps({**send, "client_id": "after", "body": "after"}))
        frame = await _next(socket, "ack", "error")
        assert frame["type"] == "ack", frame
        assert frame["seq"] == 2  # the stream continued: Redis kept its data


async def _next(socket, *kinds):
    async with asyncio.timeout(10):
        while (frame := json.loads(await socket.recv()))["type"] not in kinds:
            pass
    return frame
