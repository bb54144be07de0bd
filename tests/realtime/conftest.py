import json
from types import SimpleNamespace

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from chatsvc.asgi import application
from tests import factories


class Client:
    """A WebSocket client speaking protocol v1 to the in-process ASGI app."""

    def __init__(self, origin: str | None = None, host: str = "127.0.0.1:8000"):
        headers = [(b"host", host.encode())]
        if origin:
            headers.append((b"origin", origin.encode()))
        self.comm = WebsocketCommunicator(application, "/ws/v1/", headers=headers)

    async def open(self):
        connected, _ = await self.comm.connect()
        assert connected
        return self

    async def send(self, frame):
        text = frame if isinstance(frame, str) else json.dumps(frame)
        await self.comm.send_to(text_data=text)

    async def recv(self, timeout=2):
        output = await self.comm.receive_output(timeout)
        if output["type"] == "websocket.close":
            return {"type": "__closed__", "code": output.get("code")}
        return json.loads(output["text"])

    async def expect(self, kind, timeout=2, skip=("presence", "typing")):
        """The next frame of `kind`, passing over presence/typing chatter."""
        while True:
            frame = await self.recv(timeout)
            if frame["type"] == kind:
                return frame
            assert frame["type"] in skip, f"expected {kind}, got {frame}"

    async def expect_closed(self, code, timeout=3):
        frame = await self.expect("__closed__", timeout, skip=("error", "presence", "typing"))
        assert frame["code"] == code
        return frame

    async def drain(self, timeout=0.3):
        """Every frame that arrives within `timeout`."""
        frames = []
        while not await self.comm.receive_nothing(timeout):
            frames.append(await self.recv())
        return frames

    async def auth(self, token):
        await self.send({"type": "auth", "token": token})
        return await self.expect("ready")

    async def join(self, connection_id):
        await self.send({"type": "join", "connection_id": connection_id})
        return await self.expect("joined")

    async def close(self):
        await self.comm.disconnect()


@pytest.fixture
def world(transactional_db, aws):
    """Tenant acme with one room, tenant other with one room, and SQS/DynamoDB."""
    acme = factories.tenant_with_key("acme", messages_per_second=50)
    other = factories.tenant_with_key("other")
    return SimpleNamespace(
        acme=acme,
        other=other,
        room=factories.room_for(acme),
        other_room=factories.room_for(other),
        aws=aws,
    )


@pytest.fixture
async def connect():
    clients = []

    async def _connect(token=None, origin=None, room=None):
        client = await Client(origin).open()
        clients.append(client)
        if token:
            await client.auth(token)
        if room:
            await client.join(room)
        return client

    yield _connect
    for client in clients:
        await client.close()


def queued_bodies(aws, max_messages=10):
    """Everything now on the queue (received once, with a short visibility)."""
    from chatsvc.aws import clients

    bodies = []
    while True:
        response = clients.sqs().receive_message(
            QueueUrl=aws.queue_url,
            MaxNumberOfMessages=max_messages,
            VisibilityTimeout=30,
            WaitTimeSeconds=0,
        )
        batch = response.get("Messages", [])
        if not batch:
            return bodies
        bodies.extend(json.loads(m["Body"]) for m in batch)


async_db = database_sync_to_async
