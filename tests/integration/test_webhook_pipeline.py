"""Webhooks end to end, with real processes: users chat on a server, the worker
(consume_queue) stores what they did and its sender delivers signed events to a
local receiver, verified with the snippet docs/webhooks.md gives tenants."""

import asyncio
import json
import subprocess
import sys
import time

import pytest

from chatsvc.settings import BASE_DIR
from chatsvc.webhooks import services
from tests import factories
from tests.realtime.multiprocess import Peer
from tests.servers import server_env
from tests.webhooks.conftest import Receiver, doc_snippet

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def receiver():
    receiver = Receiver(statuses=[500])  # the first delivery fails: it is retried
    yield receiver
    receiver.close()


@pytest.fixture
def worker(postgres_url, redis_url, aws, tmp_path):
    """consume_queue with its webhook sender, on the test database."""
    env = {
        **server_env(database_url=postgres_url, redis_url=redis_url, aws=aws),
        "DEBUG": "true",  # production refuses webhooks to loopback, which the receiver is
        "CHAT_WEBHOOK_ALLOW_PRIVATE": "true",
        "CHAT_WEBHOOK_RETRY_BASE_SECONDS": "1",
        "LOG_LEVEL": "INFO",
    }
    log = open(tmp_path / "worker.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "manage.py", "consume_queue", "--wait-seconds", "1"],
        cwd=BASE_DIR,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield process
    process.terminate()
    process.wait(timeout=20)
    log.close()


@pytest.fixture
def chat(start_server, receiver, settings):
    settings.CHAT_WEBHOOK_ALLOW_PRIVATE = True  # the receiver is on loopback
    issued = factories.tenant_with_key("acme", messages_per_second=100)
    room = factories.room_for(issued).connection_id
    created = services.create_endpoint(tenant=issued.tenant, url=receiver.url)
    return issued, room, created, start_server()


async def test_chat_events_reach_a_receiver_signed_and_retried(chat, receiver, worker):
    issued, room, created, server = chat
    ada = await Peer.open(server, factories.token_for(issued, user_id="ada", name="Ada"), room)
    tutor = await Peer.open(
        server, factories.token_for(issued, user_id="tutor", role="moderator"), room
    )
    await ada.send({"type": "send", "connection_id": room, "client_id": "m", "body": "hi"})
    message_id = (await ada.expect("ack", client_id="m"))["id"]
    for frame in (
        {"type": "edit", "client_id": "e", "message_id": message_id, "body": "hello"},
        {"type": "react", "client_id": "r", "message_id": message_id, "emoji": "🎉"},
        {"type": "delete", "client_id": "d", "message_id": message_id},
    ):
        await (ada if frame["type"] != "delete" else tutor).send({"connection_id": room, **frame})
        await (ada if frame["type"] != "delete" else tutor).expect(
            "ack", client_id=frame["client_id"]
        )

    wanted = {
        "member.joined",
        "message.created",
        "message.edited",
        "reaction.changed",
        "message.deleted",
    }

    def delivered_ids():
        return {r["headers"]["Chatsvc-Event-Id"] for r in receiver.requests if r["status"] == 200}

    def done():
        got = {r["headers"]["Chatsvc-Event-Type"] for r in receiver.requests if r["status"] == 200}
        # ... and the one that got the 500 came again.
        retried = receiver.requests and receiver.requests[0]["headers"]["Chatsvc-Event-Id"]
        return wanted <= got and retried in delivered_ids()

    deadline = time.monotonic() + 60
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert done(), [r["headers"]["Chatsvc-Event-Type"] for r in receiver.requests]
    delivered = [r for r in receiver.requests if r["status"] == 200]

    namespace = {}
    exec(doc_snippet("python"), namespace)  # noqa: S102 - the tenant's snippet, verbatim
    for request in receiver.requests:
        assert namespace["verify"](
            created.secret, request["headers"]["Chatsvc-Signature"], request["body"]
        )
    # The one that got a 500 came again, the same event.
    failed = receiver.requests[0]
    again = [
        r
        for r in delivered
        if r["headers"]["Chatsvc-Event-Id"] == failed["headers"]["Chatsvc-Event-Id"]
    ]
    assert again and again[0]["body"] == failed["body"]

    events = {r["headers"]["Chatsvc-Event-Type"]: json.loads(r["body"]) for r in delivered}
    assert events["message.created"]["data"]["body"] == "hi"
    assert events["message.created"]["data"]["id"] == message_id
    assert events["message.edited"]["data"]["body"] == "hello"
    assert events["message.deleted"]["data"]["moderated"] is True
    assert events["reaction.changed"]["data"]["reactions"][0]["count"] == 1
    seqs = [
        events[kind]["data"]["seq"]
        for kind in ("message.created", "message.edited", "reaction.changed", "message.deleted")
    ]
    assert seqs == sorted(seqs)  # receivers order a room's events by seq
    assert all(e["connection_id"] == room for e in events.values())
