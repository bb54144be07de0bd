"""Real server processes and real WebSocket clients for the presence and
membership tests that cross processes (the production path: Redis + PostgreSQL)."""

import asyncio
import json
import urllib.error
import urllib.request

import pytest
import websockets
from django.db import connection

from tests.conftest import service_missing
from tests.servers import ServerProcess, server_env


class Peer:
    """A WebSocket client of a real server."""

    def __init__(self, socket):
        self.socket = socket

    @classmethod
    async def open(cls, server, token, room=None):
        peer = cls(await websockets.connect(server.ws_url))
        await peer.send({"type": "auth", "token": token})
        await peer.expect("ready")
        if room:
            await peer.send({"type": "join", "connection_id": room})
            peer.joined = await peer.expect("joined")
        return peer

    async def send(self, frame):
        await self.socket.send(json.dumps(frame))

    async def recv(self) -> dict:
        return json.loads(await self.socket.recv())

    async def expect(self, kind, timeout=5, **fields):
        """The next frame of `kind` (with these field values), passing over others."""
        async with asyncio.timeout(timeout):
            while True:
                frame = json.loads(await self.socket.recv())
                if frame["type"] == kind and fields.items() <= frame.items():
                    return frame

    async def expect_closed(self, timeout=5) -> int:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(timeout):
                while True:
                    await self.socket.recv()
        return closed.value.rcvd.code

    async def close(self):
        await self.socket.close()


def call(server, method, path, api_key, body=None):
    """A REST call to a real server: (status, JSON body)."""
    request = urllib.request.Request(  # noqa: S310 (loopback)
        server.url + "/api/v1" + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def postgres_url() -> str:
    """The test database's URL, for server processes to share it (PostgreSQL only)."""
    if connection.vendor != "postgresql":
        service_missing("DATABASE_URL does not point at PostgreSQL")
    s = connection.settings_dict
    return f"postgres://{s['USER']}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def servers(*, redis_url, aws, tmp_path):
    """For a fixture: yields `start(**env)`, which runs a `manage.py serve` process
    sharing the test's PostgreSQL, Redis and SQS; stops them all afterwards."""
    started = []

    def start(**overrides):
        env = server_env(database_url=postgres_url(), redis_url=redis_url, aws=aws)
        env.update({key: str(value) for key, value in overrides.items()})
        server = ServerProcess.serve(env=env, log=tmp_path / f"server{len(started)}.log")
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.stop()
