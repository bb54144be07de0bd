"""Content events through the real worker and moto's DynamoDB: any delivery order converges."""

import json

import pytest

from chatsvc.aws import clients
from chatsvc.core.ulid import new_ulid
from chatsvc.messaging import dynamo
from chatsvc.messaging.history import read_history_blocking
from chatsvc.messaging.queue_message import QueueEvent, parse, queue_event, utc_timestamp
from tests.worker.conftest import make_messages, send_bodies
from tests.worker.test_worker import make_worker

pytestmark = pytest.mark.integration


def edit(message, seq, body):
    ts = utc_timestamp()
    event = {
        "type": "message_edited",
        "connection_id": message.connection_id,
        "id": new_ulid(),
        "seq": seq,
        "message_id": message.id,
        "body": body,
        "by": {"id": message.sender_id, "name": message.sender_name},
        "ts": ts,
    }
    return queue_event(
        tenant_id="tenant-1", event=event, state={"body": body, "edited_at": ts}, expires_at=None
    )


def delete(message, seq):
    ts = utc_timestamp()
    by = {"id": "mod", "name": "Mod"}
    event = {
        "type": "message_deleted",
        "connection_id": message.connection_id,
        "id": new_ulid(),
        "seq": seq,
        "message_id": message.id,
        "by": by,
        "moderated": True,
        "ts": ts,
    }
    state = {"deleted_at": ts, "deleted_by": by, "attachments": []}
    return queue_event(tenant_id="tenant-1", event=event, state=state, expires_at=None)


def react(message, seq, reactions):
    event = {
        "type": "reaction",
        "connection_id": message.connection_id,
        "id": new_ulid(),
        "seq": seq,
        "message_id": message.id,
        "emoji": "👍",
        "user": {"id": "u", "name": "U"},
        "added": True,
        "reactions": [],
        "ts": utc_timestamp(),
    }
    return queue_event(
        tenant_id="tenant-1", event=event, state={"reactions": reactions}, expires_at=None
    )


def item(aws, message):
    return clients.dynamodb().get_item(
        TableName=aws.table,
        Key={"connection_id": {"S": message.connection_id}, "message_id": {"S": message.id}},
        ConsistentRead=True,
    )["Item"]


def run(aws, *bodies):
    send_bodies(clients.sqs(), aws.queue_url, list(bodies))
    return make_worker(aws).run()


def test_an_edit_that_arrives_before_its_message_is_applied_when_the_message_lands(aws):
    [message] = make_messages(1, seq=1)
    stats = run(aws, edit(message, 2, "edited"))
    assert stats.events == 1 and stats.deleted == 1  # kept in the state item meanwhile

    stats = run(aws, message.to_json())
    assert stats.caught_up == 1
    stored = item(aws, message)
    assert stored["body"] == {"S": "edited"} and stored["body_rev"] == {"N": "2"}


def test_a_redelivered_message_does_not_undo_its_edit(aws):
    [message] = make_messages(1, seq=1)
    run(aws, message.to_json(), edit(message, 2, "edited"))
    run(aws, message.to_json())  # SQS delivers it again (or the web tier re-queued it)
    assert item(aws, message)["body"] == {"S": "edited"}


def test_an_older_edit_never_replaces_a_newer_one_in_any_order(aws):
    [message] = make_messages(1, seq=1)
    run(aws, message.to_json(), edit(message, 5, "newest"))
    run(aws, edit(message, 3, "older"))
    assert item(aws, message)["body"] == {"S": "newest"}


def test_a_deletion_leaves_no_body_whatever_arrives_after_it(aws):
    [message] = make_messages(1, seq=1)
    run(aws, delete(message, 4))  # before the message
    run(
        aws,
        message.to_json(),
        edit(message, 2, "late edit"),
        react(message, 3, [{"emoji": "👍", "user_ids": ["u"]}]),
    )
    stored = item(aws, message)
    assert "body" not in stored and "reactions" not in stored and "edited_at" not in stored
    assert json.loads(stored["deleted_by"]["S"]) == {"id": "mod", "name": "Mod"}
    state = dynamo.fetch_record(message.connection_id, message.id)
    assert state["deleted"] == "1" and "body" not in state


def test_reactions_and_edits_are_independent_aspects(aws):
    [message] = make_messages(1, seq=1)
    reactions = [{"emoji": "👍", "user_ids": ["a", "b"]}]
    # The edit (seq 3) lands before the reaction (seq 2): both stay.
    run(aws, message.to_json(), edit(message, 3, "edited"))
    run(aws, react(message, 2, reactions))
    stored = item(aws, message)
    assert stored["body"] == {"S": "edited"}
    assert json.loads(stored["reactions"]["S"]) == reactions


def test_history_shows_the_persisted_changes(aws, settings):
    settings.CHAT_TABLE_NAME = aws.table
    first, second = make_messages(2, rooms=[new_ulid()], seq=1)
    run(aws, first.to_json(), second.to_json(), edit(first, 3, "edited"), delete(second, 4))
    page, _ = read_history_blocking(connection_id=first.connection_id, before=None, limit=10)
    by_id = {message["id"]: message for message in page}
    assert by_id[first.id]["body"] == "edited" and "edited_at" in by_id[first.id]
    assert by_id[second.id]["deleted"] is True and "body" not in by_id[second.id]


def test_moderation_events_are_kept_as_items_of_their_own(aws):
    room = new_ulid()
    event = {
        "type": "moderation",
        "connection_id": room,
        "id": new_ulid(),
        "seq": 7,
        "action": "muted",
        "user": {"id": "ada"},
        "by": None,
        "until": utc_timestamp(),
        "reason": None,
        "ts": utc_timestamp(),
    }
    stats = run(aws, queue_event(tenant_id="t", event=event, state={}, expires_at=2_000_000_000))
    assert stats.events == 1
    stored = clients.dynamodb().get_item(
        TableName=aws.table,
        Key={"connection_id": {"S": room + "#moderation"}, "message_id": {"S": event["id"]}},
    )["Item"]
    assert json.loads(stored["event"]["S"]) == event and stored["expires_at"] == {"N": "2000000000"}


def test_malformed_events_are_left_for_the_dead_letter_queue(aws):
    [message] = make_messages(1)
    body = json.loads(edit(message, 2, "x"))
    body["event"]["type"] = "message_exploded"
    stats = run(aws, json.dumps(body))
    assert (stats.invalid, stats.deleted) == (1, 0)


def test_the_queue_event_contract_parses():
    [message] = make_messages(1)
    parsed = parse(edit(message, 2, "x"))
    assert isinstance(parsed, QueueEvent) and parsed.message_id == message.id and parsed.seq == 2
    assert parse(message.to_json()) == message
