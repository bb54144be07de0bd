"""Edits, deletions and reactions through the real ASGI app, SQS and the worker process."""

import asyncio
import json

import pytest

from chatsvc.aws import clients
from tests import factories
from tests.realtime.conftest import async_db, queued_bodies
from tests.realtime.test_history import drain_queue

pytestmark = pytest.mark.django_db(transaction=True)

CHATTER = ("presence", "typing")


@pytest.fixture
async def pair(world, connect):
    """Ada and Bob in the acme room, and Ada's first message."""
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada", name="Ada"), room=room)
    bob = await connect(factories.token_for(world.acme, user_id="bob", name="Bob"), room=room)
    await ada.send({"type": "send", "connection_id": room, "client_id": "m1", "body": "helo"})
    ack = await ada.expect("ack", skip=(*CHATTER, "message"))
    await bob.expect("message")
    return ada, bob, room, ack["id"]


async def change(client, frame, *, expect="ack"):
    await client.send(frame)
    return await client.expect(expect, skip=(*CHATTER, "message", *_EVENTS))


_EVENTS = ("message_edited", "message_deleted", "reaction", "moderation")


def stored_item(aws, room, message_id):
    return (
        clients.dynamodb()
        .get_item(
            TableName=aws.table,
            Key={"connection_id": {"S": room}, "message_id": {"S": message_id}},
            ConsistentRead=True,
        )
        .get("Item")
    )


async def test_an_edit_is_sequenced_fanned_out_persisted_and_shown_in_history(world, pair):
    ada, bob, room, message_id = pair
    edit = {
        "type": "edit",
        "connection_id": room,
        "client_id": "e1",
        "message_id": message_id,
        "body": "hello",
    }
    ack = await change(ada, edit)
    seen = await bob.expect("message_edited")
    assert seen == {
        "type": "message_edited",
        "connection_id": room,
        "id": ack["id"],
        "seq": 2,
        "message_id": message_id,
        "body": "hello",
        "by": {"id": "ada", "name": "Ada"},
        "ts": ack["ts"],
    }
    assert ack["seq"] == 2 and ack["client_id"] == "e1"

    # Before the worker ran, history shows the edit (the room stream's record) ...
    await bob.send({"type": "history", "connection_id": room})
    [shown] = (await bob.expect("history", skip=(*CHATTER, *_EVENTS)))["messages"]
    assert shown["body"] == "hello" and shown["edited_at"] == ack["ts"]

    # ... and after it, DynamoDB has it: the message item and its state item.
    await asyncio.to_thread(drain_queue, world.aws)
    item = stored_item(world.aws, room, message_id)
    assert item["body"] == {"S": "hello"} and item["body_rev"] == {"N": "2"}
    assert stored_item(world.aws, room + "#state", message_id)["edited_at"] == {"S": ack["ts"]}


async def test_a_resent_edit_is_acked_once_and_changes_nothing_more(pair, world):
    ada, bob, room, message_id = pair
    edit = {
        "type": "edit",
        "connection_id": room,
        "client_id": "e1",
        "message_id": message_id,
        "body": "hello",
    }
    first = await change(ada, edit)
    again = await change(ada, edit)
    assert again == first
    assert [f["type"] for f in await bob.drain() if f["type"] not in CHATTER] == ["message_edited"]


async def test_only_the_sender_may_edit_and_only_while_the_tenant_allows(world, pair, connect):
    ada, bob, room, message_id = pair
    edit = {"type": "edit", "connection_id": room, "message_id": message_id, "body": "mine now"}
    error = await change(bob, {**edit, "client_id": "b1"}, expect="error")
    assert (error["code"], error["ref"]) == ("forbidden", "b1")

    tenant = world.acme.tenant
    tenant.message_edit_seconds = 0
    await async_db(tenant.save)()  # as the admin saves it (the process's cache forgets it)
    # Tenant settings reach sockets authenticated after the change.
    ada = await connect(factories.token_for(world.acme, user_id="ada"), room=room)
    error = await change(ada, {**edit, "client_id": "a1"}, expect="error")
    assert error["code"] == "edits_disabled"


async def test_a_deletion_leaves_a_tombstone_everywhere(world, pair):
    ada, bob, room, message_id = pair
    await change(
        ada,
        {
            "type": "react",
            "connection_id": room,
            "client_id": "r1",
            "message_id": message_id,
            "emoji": "👍",
        },
    )
    ack = await change(
        ada, {"type": "delete", "connection_id": room, "client_id": "d1", "message_id": message_id}
    )
    await bob.expect("reaction")
    deleted = await bob.expect("message_deleted")
    assert deleted["message_id"] == message_id and deleted["moderated"] is False
    assert deleted["by"] == {"id": "ada", "name": "Ada"} and deleted["seq"] == ack["seq"] == 3

    edit = {
        "type": "edit",
        "connection_id": room,
        "client_id": "e2",
        "message_id": message_id,
        "body": "back",
    }
    assert (await change(ada, edit, expect="error"))["code"] == "message_deleted"

    await asyncio.to_thread(drain_queue, world.aws)
    item = stored_item(world.aws, room, message_id)
    assert "body" not in item and "reactions" not in item and "deleted_at" in item
    await bob.send({"type": "history", "connection_id": room})
    [shown] = (await bob.expect("history", skip=(*CHATTER, *_EVENTS)))["messages"]
    assert shown["deleted"] is True and "body" not in shown and "reactions" not in shown
    assert shown["deleted_by"] == {"id": "ada", "name": "Ada"}


async def test_members_cannot_delete_others_messages_and_moderators_can(world, pair, connect):
    ada, bob, room, message_id = pair
    delete = {"type": "delete", "connection_id": room, "message_id": message_id}
    assert (await change(bob, {**delete, "client_id": "x"}, expect="error"))["code"] == "forbidden"
    mod = await connect(
        factories.token_for(world.acme, user_id="tutor", name="Tutor", role="moderator"), room=room
    )
    await change(mod, {**delete, "client_id": "m"})
    deleted = await ada.expect("message_deleted")
    assert deleted["moderated"] is True and deleted["by"]["id"] == "tutor"


async def test_reactions_toggle_with_counts_and_reactors(world, pair, connect):
    ada, bob, room, message_id = pair
    cy = await connect(factories.token_for(world.acme, user_id="cy"), room=room)
    react = {"type": "react", "connection_id": room, "message_id": message_id, "emoji": "🎉"}
    await change(ada, {**react, "client_id": "r1"})
    await change(bob, {**react, "client_id": "r2"})
    await change(bob, {**react, "client_id": "r3", "emoji": "👍"})
    await change(ada, {**react, "client_id": "r4"})  # Ada takes hers back
    frames = [f for f in await cy.drain() if f["type"] == "reaction"]
    assert [(f["user"]["id"], f["emoji"], f["added"]) for f in frames] == [
        ("ada", "🎉", True),
        ("bob", "🎉", True),
        ("bob", "👍", True),
        ("ada", "🎉", False),
    ]
    assert frames[-1]["reactions"] == [
        {"emoji": "🎉", "count": 1, "user_ids": ["bob"]},
        {"emoji": "👍", "count": 1, "user_ids": ["bob"]},
    ]
    await asyncio.to_thread(drain_queue, world.aws)
    item = stored_item(world.aws, room, message_id)
    assert json.loads(item["reactions"]["S"]) == [
        {"emoji": "🎉", "user_ids": ["bob"]},
        {"emoji": "👍", "user_ids": ["bob"]},
    ]
    await ada.send({"type": "history", "connection_id": room})
    [shown] = (await ada.expect("history", skip=(*CHATTER, *_EVENTS)))["messages"]
    assert shown["reactions"] == frames[-1]["reactions"]


async def test_a_resume_replays_content_events(world, pair, connect):
    ada, bob, room, message_id = pair
    joined_seq = 1
    await bob.close()
    await change(
        ada,
        {
            "type": "edit",
            "connection_id": room,
            "client_id": "e",
            "message_id": message_id,
            "body": "hello",
        },
    )
    again = await connect(factories.token_for(world.acme, user_id="bob"))
    epoch = (await again.join(room))["epoch"]
    await again.close()
    back = await connect(factories.token_for(world.acme, user_id="bob"))
    await back.send({"type": "join", "connection_id": room, "since": joined_seq, "epoch": epoch})
    replayed = await back.expect("message_edited")
    assert replayed["body"] == "hello" and replayed["seq"] == 2
    assert (await back.expect("joined"))["recovered"] is True


async def test_edit_events_are_queued_for_the_worker(world, pair):
    ada, _, room, message_id = pair
    queued_bodies(world.aws)  # the message itself
    ack = await change(
        ada,
        {
            "type": "edit",
            "connection_id": room,
            "client_id": "e",
            "message_id": message_id,
            "body": "hello",
        },
    )
    [queued] = queued_bodies(world.aws)
    assert queued["kind"] == "event" and queued["tenant_id"] == world.acme.tenant.id
    assert queued["event"]["id"] == ack["id"] and queued["event"]["type"] == "message_edited"
    assert queued["state"] == {"body": "hello", "edited_at": ack["ts"]}


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "edit", "client_id": "x", "message_id": "M", "body": "b"}, "message_not_found"),
        ({"type": "edit", "client_id": "x", "message_id": "M!", "body": " "}, "message_not_found"),
        ({"type": "edit", "client_id": "x", "body": "b"}, "bad_frame"),  # no message_id
        ({"type": "edit", "client_id": "", "message_id": "ID", "body": "b"}, "bad_frame"),
        ({"type": "edit", "client_id": "x", "message_id": "ID", "body": "\u200b"}, "bad_frame"),
        ({"type": "edit", "client_id": "x", "message_id": "ID", "body": "a\x00"}, "bad_frame"),
        (
            {"type": "edit", "client_id": "x", "message_id": "ID", "body": "x" * 4001},
            "body_too_long",
        ),
        ({"type": "delete", "client_id": "x", "message_id": 7}, "bad_frame"),
        ({"type": "react", "client_id": "x", "message_id": "ID", "emoji": ""}, "bad_frame"),
        ({"type": "react", "client_id": "x", "message_id": "ID", "emoji": "a b"}, "bad_frame"),
        ({"type": "react", "client_id": "x", "message_id": "ID", "emoji": "x" * 33}, "bad_frame"),
        ({"type": "react", "client_id": "x", "message_id": "ID", "emoji": "\ud800"}, "bad_frame"),
        ({"type": "moderate", "client_id": "x", "action": "nuke", "user_id": "u"}, "bad_frame"),
        ({"type": "moderate", "client_id": "x", "action": "mute", "user_id": "u"}, "bad_frame"),
        (
            {"type": "moderate", "client_id": "x", "action": "kick", "user_id": "u", "seconds": 9},
            "bad_frame",
        ),
        (
            {"type": "moderate", "client_id": "x", "action": "ban", "user_id": "u", "seconds": 0},
            "bad_frame",
        ),
        ({"type": "moderate", "client_id": "x", "action": "ban", "user_id": ""}, "bad_frame"),
        ({"type": "send", "client_id": "x", "body": "", "attachments": []}, "bad_attachment"),
        ({"type": "send", "client_id": "x", "body": "", "attachments": [1]}, "bad_attachment"),
        ({"type": "send", "client_id": "x", "body": ""}, "bad_frame"),
        (
            {"type": "upload", "client_id": "x", "name": "a", "content_type": "image/png"},
            "bad_frame",
        ),
        (
            {"type": "upload", "client_id": "x", "name": "a", "content_type": "a/b", "size": 0},
            "bad_attachment",
        ),
    ],
)
async def test_bad_content_frames_get_a_clear_error_and_change_nothing(pair, frame, code):
    ada, bob, room, message_id = pair
    frame = {"connection_id": room, **frame}
    if frame.get("message_id") == "ID":
        frame["message_id"] = message_id
    await ada.send(frame)
    error = await ada.expect("error", skip=CHATTER)
    assert error["code"] == code, error
    assert error["message"]
    assert [f for f in await bob.drain() if f["type"] not in CHATTER] == []


async def test_changes_to_another_rooms_message_are_not_found(world, pair):
    ada, _, _, message_id = pair
    second = await async_db(factories.room_for)(world.acme, "Second")
    await ada.join(second.connection_id)
    await ada.send(
        {
            "type": "react",
            "connection_id": second.connection_id,
            "client_id": "r",
            "message_id": message_id,
            "emoji": "👍",
        }
    )
    assert (await ada.expect("error", skip=CHATTER))["code"] == "message_not_found"


async def test_a_lost_record_is_rebuilt_with_the_persisted_changes(world, pair, settings):
    """Redis evicted or expired the message's record while the message is still in the
    replay log: the deletion persisted in DynamoDB still holds, in history and rules."""
    import redis

    ada, bob, room, message_id = pair
    await change(
        ada,
        {
            "type": "react",
            "connection_id": room,
            "client_id": "r",
            "message_id": message_id,
            "emoji": "👍",
        },
    )
    await change(
        ada, {"type": "delete", "connection_id": room, "client_id": "d", "message_id": message_id}
    )
    await asyncio.to_thread(drain_queue, world.aws)
    if settings.REDIS_URL:
        redis.Redis.from_url(settings.REDIS_URL).delete(f"chatsvc:{{{room}}}:m:{message_id}")
    else:
        from chatsvc.streams import memory_stream

        memory_stream._records.pop((room, message_id))

    await bob.send({"type": "history", "connection_id": room})
    [shown] = (await bob.expect("history", skip=(*CHATTER, *_EVENTS)))["messages"]
    assert shown["deleted"] is True and "body" not in shown
    error = await change(
        bob,
        {
            "type": "react",
            "connection_id": room,
            "client_id": "r2",
            "message_id": message_id,
            "emoji": "👍",
        },
        expect="error",
    )
    assert error["code"] == "message_deleted"


async def test_an_edit_to_a_dollar_word_is_stored_as_written(world, pair):
    ada, bob, room, message_id = pair
    edit = {
        "type": "edit",
        "connection_id": room,
        "client_id": "e",
        "message_id": message_id,
        "body": "$seq",
    }
    await change(ada, edit)
    await bob.send({"type": "history", "connection_id": room})
    [shown] = (await bob.expect("history", skip=(*CHATTER, *_EVENTS)))["messages"]
    assert shown["body"] == "$seq"


async def test_moderators_cannot_lift_the_tenants_removal(world, pair, connect):
    from chatsvc.rooms.services import remove_member

    room = pair[2]
    await async_db(remove_member)(room=world.room, user_id="bob")  # the LMS unenrolled Bob
    mod = await connect(
        factories.token_for(world.acme, user_id="tutor", role="moderator"), room=room
    )
    for action in ("unban", "ban"):
        frame = {
            "type": "moderate",
            "connection_id": room,
            "client_id": action,
            "action": action,
            "user_id": "bob",
            "seconds": 1,
        }
        if action == "unban":
            del frame["seconds"]
        error = await change(mod, frame, expect="error")
        assert (error["code"], error["ref"]) == ("forbidden", action)
    from chatsvc.rooms.selectors import is_removed

    assert await async_db(is_removed)(connection_id=room, user_id="bob")
