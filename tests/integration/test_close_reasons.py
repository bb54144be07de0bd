"""The close reason reaches a client through the real server (daphne drops the ASGI
close reason; chatsvc.core.websocket_protocol passes it on)."""

import asyncio
import json

import pytest
import websockets

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


async def closed(socket) -> tuple[int, str, list[dict]]:
    frames = []
    async with asyncio.timeout(10):
        try:
            async for text in socket:
                frames.append(json.loads(text))
        except websockets.ConnectionClosed:
            pass
    return socket.close_code, socket.close_reason, frames


async def test_auth_refusals_say_why_in_the_frame_and_the_close_reason(start_server):
    server = start_server()
    socket = await websockets.connect(server.ws_url)
    await socket.send(json.dumps({"type": "ping"}))
    code, reason, frames = await closed(socket)
    assert code == 4401
    assert "the first frame must be auth" in reason
    assert frames[-1]["type"] == "error" and frames[-1]["message"].startswith(reason[:40])

    socket = await websockets.connect(server.ws_url)
    await socket.send(json.dumps({"type": "auth", "token": "not-a-jwt"}))
    code, reason, frames = await closed(socket)
    assert code == 4401 and reason.startswith("malformed token")
    assert frames[-1]["code"] == "bad_token"
    assert len(reason.encode()) <= 123
