"""History end to end in-process: WebSocket send -> SQS -> consume_queue -> DynamoDB -> history."""

import asyncio
import os
import subprocess
import sys

import pytest
from asgiref.sync import sync_to_async

from chatsvc.settings import BASE_DIR
from tests import factories

pytestmark = pytest.mark.django_db(transaction=True)


def drain_queue(aws):
    """Run the real worker process until the queue is empty."""
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": aws.endpoint,
        "CHAT_QUEUE_URL": aws.queue_url,
        "CHAT_TABLE_NAME": aws.table,
    }
    subprocess.run(
        [sys.executable, "manage.py", "consume_queue", "--once", "--wait-seconds", "1"],
        cwd=BASE_DIR,
        env=env,
        check=True,
        timeout=60,
        capture_output=True,
    )


async def send_all(client, room, bodies):
    ids = []
    for n, body in enumerate(bodies):
        await client.send(
            {"type": "send", "connection_id": room, "client_id": f"h{n}", "body": body}
        )
        ids.append((await client.expect("ack", skip=("message", "presence")))["id"])
    return ids


async def test_history_pages_newest_first_over_websocket_and_rest(world, connect, client):
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada"), room=room)
    ids = await send_all(ada, room, [f"m{n}" for n in range(7)])
    await asyncio.to_thread(drain_queue, world.aws)

    await ada.send({"type": "history", "connection_id": room, "limit": 3})
    page = await ada.expect("history", skip=("message", "presence"))
    assert [m["id"] for m in page["messages"]] == ids[::-1][:3]
    assert page["messages"][0] == {
        "connection_id": room,
        "id": ids[-1],
        "seq": 7,
        "sender": {"id": "ada", "name": "Ada"},
        "body": "m6",
        "ts": page["messages"][0]["ts"],
    }
    collected = [m["id"] for m in page["messages"]]
    while page["next"]:
        await ada.send(
            {"type": "history", "connection_id": room, "before": page["next"], "limit": 3}
        )
        page = await ada.expect("history", skip=("message", "presence"))
        collected += [m["id"] for m in page["messages"]]
    assert collected == ids[::-1]

    headers = {"Authorization": f"Bearer {world.acme.api_key}"}
    response = await sync_to_async(client.get)(
        f"/api/v1/connections/{room}/messages?limit=5", headers=headers
    )
    assert response.status_code == 200
    body = response.json()
    assert [m["id"] for m in body["messages"]] == ids[::-1][:5] and body["next"] == ids[2]
    first_page_again = await sync_to_async(client.get)(
        f"/api/v1/connections/{room}/messages?before=&limit=5", headers=headers
    )
    assert first_page_again.json() == body  # an empty cursor means "from the newest"
    response = await sync_to_async(client.get)(
        f"/api/v1/connections/{room}/messages?before={body['next']}", headers=headers
    )
    assert [m["id"] for m in response.json()["messages"]] == ids[1::-1]
    assert response.json()["next"] is None


async def test_history_needs_the_room_joined(world, connect):
    ada = await connect(factories.token_for(world.acme))
    await ada.send({"type": "history", "connection_id": world.room.connection_id})
    assert (await ada.expect("error"))["code"] == "not_joined"


async def test_admin_shows_a_rooms_recent_messages(world, connect, admin_client):
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada"), room=room)
    await send_all(ada, room, ["<b>first</b>", "second"])
    await asyncio.to_thread(drain_queue, world.aws)

    page = await sync_to_async(admin_client.get)(f"/admin/rooms/room/{room}/change/")
    html = page.content.decode()
    assert html.index("second") < html.index("&lt;b&gt;first&lt;/b&gt;")  # newest first, escaped
    assert "<b>first</b>" not in html


async def test_history_outage_is_an_error_frame_and_a_503(world, connect, client, settings):
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme), room=room)
    settings.CHAT_TABLE_NAME = "no-such-table"

    await ada.send({"type": "history", "connection_id": room})
    error = await ada.expect("error")
    assert error["code"] == "history_unavailable" and error["ref"] == room
    await ada.send({"type": "ping"})
    assert (await ada.expect("pong"))["type"] == "pong"  # the socket survived

    headers = {"Authorization": f"Bearer {world.acme.api_key}"}
    response = await sync_to_async(client.get)(
        f"/api/v1/connections/{room}/messages", headers=headers
    )
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"
