"""Attachments through the WebSocket protocol: `upload`, a real presigned POST to moto's
S3 over HTTP, `send {attachments}`, history, and deletion by the worker."""

import asyncio

import pytest
import requests

from chatsvc.attachments.models import Attachment
from tests import factories
from tests.attachments.conftest import PDF, PNG, keys_in, post_upload
from tests.realtime.conftest import async_db
from tests.worker.test_worker import make_worker

pytestmark = pytest.mark.django_db(transaction=True)

SKIP = ("presence", "typing", "message", "message_deleted")


async def granted(client, room, data, *, name="pic.png", content_type="image/png", ref="u1"):
    await client.send(
        {
            "type": "upload",
            "connection_id": room,
            "client_id": ref,
            "name": name,
            "content_type": content_type,
            "size": len(data),
        }
    )
    grant = await client.expect("upload", skip=SKIP)
    assert grant["client_id"] == ref and grant["connection_id"] == room
    assert post_upload(grant, data, filename=name).status_code in (200, 201, 204)
    return grant


async def test_a_message_carries_its_upload_to_everyone_and_into_history(world, connect, bucket):
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada"), room=room)
    bob = await connect(factories.token_for(world.acme, user_id="bob"), room=room)
    grant = await granted(ada, room, PNG)

    await ada.send(
        {
            "type": "send",
            "connection_id": room,
            "client_id": "m1",
            "body": "",
            "attachments": [grant["id"]],
        }
    )
    ack = await ada.expect("ack", skip=SKIP)
    seen = await bob.expect("message")
    [attachment] = seen["attachments"]
    assert attachment["id"] == grant["id"] and attachment["content_type"] == "image/png"
    assert attachment["size"] == len(PNG) and "key" not in attachment
    assert await downloaded(attachment["url"]) == PNG

    await make_worker_run(world)
    await bob.send({"type": "history", "connection_id": room})
    [shown] = (await bob.expect("history", skip=SKIP))["messages"]
    assert shown["id"] == ack["id"] and shown["attachments"][0]["id"] == grant["id"]
    assert await downloaded(shown["attachments"][0]["url"]) == PNG

    # Deleting the message deletes its file once the worker has the tombstone.
    await ada.send(
        {"type": "delete", "connection_id": room, "client_id": "d1", "message_id": ack["id"]}
    )
    await ada.expect("ack", skip=SKIP)
    assert keys_in(bucket)
    await make_worker_run(world)
    assert keys_in(bucket) == []
    row = await async_db(Attachment.objects.get)(pk=grant["id"])
    assert row.status == Attachment.Status.DELETED


async def test_bad_attachments_are_refused_and_nothing_is_posted(world, connect, bucket):
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada"), room=room)
    bob = await connect(factories.token_for(world.acme, user_id="bob"), room=room)
    grant = await granted(ada, room, PNG, name="report.pdf", content_type="application/pdf")
    send = {"type": "send", "connection_id": room, "body": "see"}

    await ada.send({**send, "client_id": "m1", "attachments": [grant["id"]]})
    error = await ada.expect("error", skip=SKIP)
    assert (error["code"], error["ref"]) == ("attachment_rejected", "m1")

    # Bob cannot send Ada's upload; an unknown id is not found.
    theirs = await granted(ada, room, PDF, name="a.pdf", content_type="application/pdf", ref="u2")
    await bob.send({**send, "client_id": "b1", "attachments": [theirs["id"]]})
    assert (await bob.expect("error", skip=SKIP))["code"] == "attachment_not_found"
    await ada.send({**send, "client_id": "m2", "attachments": []})
    assert (await ada.expect("error", skip=SKIP))["code"] == "bad_attachment"
    assert [f for f in await bob.drain() if f["type"] == "message"] == []

    await ada.send(
        {
            "type": "upload",
            "connection_id": room,
            "client_id": "big",
            "name": "huge.png",
            "content_type": "image/png",
            "size": 10**9,
        }
    )
    assert (await ada.expect("error", skip=SKIP))["code"] == "attachment_too_large"


async def make_worker_run(world):
    await asyncio.to_thread(make_worker(world.aws).run)


async def downloaded(url: str) -> bytes:
    response = await asyncio.to_thread(requests.get, url, timeout=10)
    return response.content
