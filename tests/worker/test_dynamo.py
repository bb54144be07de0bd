"""Item conversion, idempotent batch writes and history pages against moto's server."""

import json
import time

import pytest

from chatsvc.aws import clients
from chatsvc.core.ulid import new_ulid
from chatsvc.messaging import dynamo
from chatsvc.messaging.dynamo import InvalidHistoryQuery, fetch_history, to_item, write_items
from chatsvc.messaging.queue_message import InvalidQueueMessage, QueueMessage
from tests.worker.conftest import make_messages, scan_items

# --- conversion (no AWS) -------------------------------------------------------------


def test_item_has_the_contract_attributes():
    message = make_messages(1, expires_at=1_900_000_000)[0]
    item = to_item(message)
    assert item["connection_id"] == {"S": message.connection_id}
    assert item["message_id"] == {"S": message.id}
    assert item["v"] == {"N": "1"}
    assert item["expires_at"] == {"N": "1900000000"}
    for name in ("tenant_id", "sender_id", "sender_name", "body", "ts"):
        assert item[name] == {"S": getattr(message, name)}
    assert item["created_at"]["S"].endswith("+00:00")
    assert "expires_at" not in to_item(make_messages(1)[0])


def test_item_round_trips_the_queue_json():
    message = make_messages(1)[0]
    again = QueueMessage.from_json(message.to_json())
    frame = dynamo.item_to_message(to_item(again))
    assert frame == {
        "connection_id": message.connection_id,
        "id": message.id,
        "sender": {"id": message.sender_id, "name": message.sender_name},
        "body": message.body,
        "ts": message.ts,
    }


@pytest.mark.parametrize("field", ["connection_id", "id"])
@pytest.mark.parametrize("value", ["", "x" * 3000, "not-a-ulid"])
def test_keys_that_would_break_a_whole_batch_are_rejected(field, value):
    message = make_messages(1)[0]
    data = {**json.loads(message.to_json()), field: value}
    with pytest.raises(InvalidQueueMessage):
        to_item(QueueMessage.from_json(json.dumps(data)))


def test_backoff_is_jittered_and_capped():
    delays = [dynamo.backoff_delay(attempt) for attempt in range(1, 30) for _ in range(20)]
    assert all(0 <= delay <= 2.0 for delay in delays)
    assert len(set(delays)) > 100


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"connection_id": "nope"}, "connection_id"),
        ({"before": "nope"}, "before"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "5"}, "limit"),
        ({"limit": True}, "limit"),
    ],
)
def test_history_rejects_bad_queries(kwargs, problem):
    query = {"connection_id": new_ulid(), **kwargs}
    with pytest.raises(InvalidHistoryQuery, match=problem):
        fetch_history(**query)


# --- against moto's server -------------------------------------------------------------


@pytest.mark.integration
def test_write_items_collapses_duplicate_keys(aws):
    message = make_messages(1)[0]
    twin = to_item(message)
    result = write_items(items=[to_item(message), twin, *map(to_item, make_messages(30))])
    assert result.failed == []
    assert len(result.stored) == 31
    assert result.calls == 2  # 25 + 6: the duplicate did not make DynamoDB reject a request
    assert len(scan_items(clients.dynamodb(), aws.table)) == 31


@pytest.mark.integration
def test_rewriting_the_same_message_is_harmless(aws):
    messages = make_messages(5)
    write_items(items=map(to_item, messages))
    write_items(items=map(to_item, messages))
    items = scan_items(clients.dynamodb(), aws.table)
    assert len(items) == 5
    assert sorted(item["body"]["S"] for item in items) == sorted(m.body for m in messages)


@pytest.mark.integration
def test_history_pages_newest_first_until_exhausted(aws):
    room = new_ulid()
    messages = make_messages(23, rooms=[room])
    write_items(items=[*map(to_item, messages), *map(to_item, make_messages(5))])
    pages, before = [], None
    while True:
        page, before = fetch_history(connection_id=room, before=before, limit=10)
        pages.append(page)
        if before is None:
            break
    assert [len(page) for page in pages] == [10, 10, 3]
    ids = [message["id"] for page in pages for message in page]
    assert ids == [m.id for m in reversed(messages)]
    assert pages[0][0] == {
        "connection_id": room,
        "id": messages[-1].id,
        "sender": {"id": messages[-1].sender_id, "name": messages[-1].sender_name},
        "body": messages[-1].body,
        "ts": messages[-1].ts,
    }


@pytest.mark.integration
def test_history_exact_page_has_no_next(aws):
    room = new_ulid()
    write_items(items=map(to_item, make_messages(10, rooms=[room])))
    page, cursor = fetch_history(connection_id=room, limit=10)
    assert len(page) == 10
    assert cursor is None
    assert fetch_history(connection_id=new_ulid()) == ([], None)


@pytest.mark.integration
def test_history_hides_expired_messages(aws):
    room = new_ulid()
    now = int(time.time())
    alive = make_messages(4, rooms=[room], expires_at=now + 3600)
    expired = make_messages(3, rooms=[room], expires_at=now - 5)
    forever = make_messages(2, rooms=[room])
    write_items(items=map(to_item, [*alive, *expired, *forever]))
    page, cursor = fetch_history(connection_id=room, limit=3)
    assert [m["id"] for m in page] == [forever[1].id, forever[0].id, alive[3].id]
    rest, cursor = fetch_history(connection_id=room, before=cursor, limit=3)
    assert [m["id"] for m in rest] == [alive[2].id, alive[1].id, alive[0].id]
    assert cursor is None


class LimitBeforeFilter:
    """The real client, with DynamoDB's Query semantics that moto lacks.

    DynamoDB applies Limit to the items it reads and filters afterwards (a page
    can come back short or empty with a LastEvaluatedKey); moto filters first.
    """

    def __init__(self, client):
        self.client = client
        self.queries = 0

    def query(self, **params):
        self.queries += 1
        params = {
            **params,
            "ExpressionAttributeNames": dict(params["ExpressionAttributeNames"]),
            "ExpressionAttributeValues": dict(params["ExpressionAttributeValues"]),
        }
        params.pop("FilterExpression")
        now = int(params["ExpressionAttributeValues"].pop(":now")["N"])
        del params["ExpressionAttributeNames"]["#e"]
        response = self.client.query(**params)
        response["Items"] = [
            item
            for item in response["Items"]
            if int(item.get("expires_at", {"N": now})["N"]) >= now
        ]
        return response


@pytest.mark.integration
def test_history_skips_long_runs_of_expired_items_with_a_cursor(aws, monkeypatch):
    room = new_ulid()
    old = make_messages(3, rooms=[room])
    expired = make_messages(dynamo.HISTORY_MAX_QUERIES * 2 + 1, rooms=[room], expires_at=1)
    write_items(items=map(to_item, [*old, *expired]))
    client = LimitBeforeFilter(clients.dynamodb())
    monkeypatch.setattr(clients, "dynamodb", lambda: client)
    # limit=1 reads two items per query: the expired run outlasts one call's query budget.
    page, before = fetch_history(connection_id=room, limit=1)
    assert (page, client.queries) == ([], dynamo.HISTORY_MAX_QUERIES)
    assert before == expired[1].id  # the last item evaluated; the caller keeps paging
    pages = [page]
    while before is not None:
        page, before = fetch_history(connection_id=room, before=before, limit=1)
        pages.append(page)
    assert [m["id"] for page in pages for m in page] == [old[2].id, old[1].id, old[0].id]


def test_the_next_release_s_messages_are_read_too():
    """Releases overlap: a worker reads the next version's messages (new fields ignored)."""
    [message] = make_messages(1)
    raw = json.dumps({**json.loads(message.to_json()), "v": 2, "reactions": {"+1": 2}})
    assert QueueMessage.from_json(raw) == message
    with pytest.raises(InvalidQueueMessage):
        QueueMessage.from_json(json.dumps({**json.loads(message.to_json()), "v": 3}))
