"""The messages table: queue message -> item, idempotent batch writes, history reads.

Items are keyed by (connection_id, message_id). A PutRequest of the same key
replaces the item with identical content, so redelivered queue messages are
harmless; only `created_at` moves to the time of the latest write.

Content events (edits, deletions, reactions) change messages after the
fact, and SQS delivers in no particular order, so they are written in a way
any order converges (docs/architecture.md, "Content events"):

- each message's latest changes also live in a *state item*, keyed
  ("<connection_id>#state", message_id), which no message write touches;
- an event updates the state item, then the message item, each only if its
  seq is newer than what the item has for that aspect (`body_rev` for the
  body and deletion, `reactions_rev` for reactions), and the message item
  only if it exists;
- after writing messages, the worker reads their state items (one
  consistent BatchGetItem) and applies what it finds: a message stored
  after its own edit, or written again by a redelivery, ends up current.

Moderation actions are kept as items of ("<connection_id>#moderation", event id).
"""

import json
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings

from chatsvc.aws import clients
from chatsvc.core.ulid import is_ulid
from chatsvc.messaging.message_state import shown_reactions, tombstone
from chatsvc.messaging.queue_message import VERSION, InvalidQueueMessage, QueueEvent, QueueMessage

logger = logging.getLogger(__name__)

BATCH_WRITE_MAX = 25  # DynamoDB BatchWriteItem limit
BATCH_GET_MAX = 100  # DynamoDB BatchGetItem limit
DEFAULT_WRITE_TIMEOUT = 10.0  # seconds of retrying before items count as failed
HISTORY_MAX_LIMIT = 100
HISTORY_DEFAULT_LIMIT = 50
# Pages of expired-but-not-yet-deleted items (TTL deletion lags) to skip per call.
HISTORY_MAX_QUERIES = 5

# Errors worth another attempt; anything else from DynamoDB is a bad request.
RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        "LimitExceededException",
        "TransactionInProgressException",
    }
)

Key = tuple[str, str]  # (connection_id, message_id)


class InvalidHistoryQuery(ValueError):
    """A history request with a bad connection id, cursor or page size."""


def item_key(item: dict) -> Key:
    return item["connection_id"]["S"], item["message_id"]["S"]


def to_item(message: QueueMessage, *, stored_at: datetime | None = None) -> dict:
    """The DynamoDB item (low-level attribute values) for a queue message."""
    # Key attributes must be valid ULIDs: an empty or oversized key would make
    # DynamoDB reject the whole batch it travels in.
    if not is_ulid(message.connection_id):
        raise InvalidQueueMessage("connection_id is not a ULID")
    if not is_ulid(message.id):
        raise InvalidQueueMessage("id is not a ULID")
    stored_at = stored_at or datetime.now(UTC)
    item = {
        "connection_id": {"S": message.connection_id},
        "message_id": {"S": message.id},
        "v": {"N": str(VERSION)},
        "tenant_id": {"S": message.tenant_id},
        "sender_id": {"S": message.sender_id},
        "sender_name": {"S": message.sender_name},
        "body": {"S": message.body},
        "ts": {"S": message.ts},
        "created_at": {"S": stored_at.isoformat(timespec="milliseconds")},
    }
    if message.expires_at is not None:
        item["expires_at"] = {"N": str(message.expires_at)}
    if message.seq is not None:
        item["seq"] = {"N": str(message.seq)}
    if message.attachments:
        item["attachments"] = {
            "L": [
                {
                    "M": {
                        "id": {"S": a["id"]},
                        "name": {"S": a["name"]},
                        "content_type": {"S": a["content_type"]},
                        "size": {"N": str(a["size"])},
                        "key": {"S": a["key"]},
                    }
                }
                for a in message.attachments
            ]
        }
    return item


def item_to_message(item: dict, *, with_revs: bool = False) -> dict:
    """A stored item shaped like the WebSocket `message` frame (without `type`).

    `with_revs` adds `_body_rev` and `_reactions_rev`: which changes the item
    has, for history to compare with the room stream's (message_state.overlay
    removes them).
    """
    message = {"connection_id": item["connection_id"]["S"], "id": item["message_id"]["S"]}
    if "seq" in item:  # items stored before rooms had sequences have none
        message["seq"] = int(item["seq"]["N"])
    message.update(
        sender={"id": item["sender_id"]["S"], "name": item["sender_name"]["S"]},
        body=item.get("body", {}).get("S", ""),
        ts=item["ts"]["S"],
    )
    if "edited_at" in item:
        message["edited_at"] = item["edited_at"]["S"]
    if "attachments" in item:  # with their keys: history adds download URLs
        message["attachments"] = [
            {
                "id": a["M"]["id"]["S"],
                "name": a["M"]["name"]["S"],
                "content_type": a["M"]["content_type"]["S"],
                "size": int(a["M"]["size"]["N"]),
                "key": a["M"]["key"]["S"],
            }
            for a in item["attachments"]["L"]
        ]
    if "reactions" in item and (reactions := json.loads(item["reactions"]["S"])):
        message["reactions"] = shown_reactions(reactions)
    if "deleted_at" in item:
        tombstone(message, item["deleted_at"]["S"], json.loads(item["deleted_by"]["S"]))
    if with_revs:
        message["_body_rev"] = int(item.get("body_rev", {}).get("N", 0))
        message["_reactions_rev"] = int(item.get("reactions_rev", {}).get("N", 0))
    return message


# --- content events ------------------------------------------------------------------

STATE_SUFFIX = "#state"
MODERATION_SUFFIX = "#moderation"
_NAMES = {
    "#m": "message_id",
    "#b": "body",
    "#ea": "edited_at",
    "#br": "body_rev",
    "#da": "deleted_at",
    "#db": "deleted_by",
    "#re": "reactions",
    "#rr": "reactions_rev",
    "#at": "attachments",
}


def _change_expression(kind: str, state: dict, seq: int) -> tuple[str, str, dict]:
    """(update, condition, values) applying one change to an item, if newer."""
    rev = {"N": str(seq)}
    if kind == "message_edited":
        return (
            "SET #b = :b, #ea = :ea, #br = :r",
            "attribute_not_exists(#da) AND (attribute_not_exists(#br) OR #br < :r)",
            {":b": {"S": state["body"]}, ":ea": {"S": state["edited_at"]}, ":r": rev},
        )
    if kind == "message_deleted":
        return (
            "SET #da = :da, #db = :db, #br = :r, #rr = :r REMOVE #b, #ea, #re, #at",
            "attribute_not_exists(#da)",
            {
                ":da": {"S": state["deleted_at"]},
                ":db": {"S": json.dumps(state.get("deleted_by"))},
                ":r": rev,
            },
        )
    if kind == "reaction":
        return (
            "SET #re = :re, #rr = :r",
            "attribute_not_exists(#da) AND (attribute_not_exists(#rr) OR #rr < :r)",
            {":re": {"S": json.dumps(state["reactions"], ensure_ascii=False)}, ":r": rev},
        )
    raise InvalidQueueMessage(f"not a message change: {kind}")


def _update_if_newer(
    client,
    table: str,
    key: dict,
    kind: str,
    state: dict,
    seq: int,
    *,
    must_exist: bool,
    expires_at: int | None = None,
) -> bool:
    """Apply one change to one item; False when the item has it (or newer) already."""
    update, condition, values = _change_expression(kind, state, seq)
    names = {name: _NAMES[name] for name in set(re.findall(r"#\w+", f"{update} {condition}"))}
    if must_exist:
        condition = f"attribute_exists(#m) AND ({condition})"
        names["#m"] = "message_id"
    if expires_at is not None:
        update = update.replace("SET ", "SET #x = :x, ", 1)
        names["#x"] = "expires_at"
        values[":x"] = {"N": str(expires_at)}
    try:
        client.update_item(
            TableName=table,
            Key=key,
            UpdateExpression=update,
            ConditionExpression=condition,
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
    except ClientError as exc:
        if _error_code(exc) == "ConditionalCheckFailedException":
            return False
        raise
    return True


def store_event(event: QueueEvent, *, table: str | None = None, client=None) -> None:
    """Persist one content event (idempotent, any order). Raises ClientError/BotoCoreError."""
    table = table or settings.CHAT_TABLE_NAME
    client = client or clients.dynamodb()
    cid = event.connection_id
    if not is_ulid(cid) or not is_ulid(event.id):
        raise InvalidQueueMessage("event ids must be ULIDs")
    if event.type == "moderation":
        item = {
            "connection_id": {"S": cid + MODERATION_SUFFIX},
            "message_id": {"S": event.id},
            "tenant_id": {"S": event.tenant_id},
            "seq": {"N": str(event.seq)},
            "event": {"S": json.dumps(event.event, ensure_ascii=False)},
        }
        if event.expires_at is not None:
            item["expires_at"] = {"N": str(event.expires_at)}
        client.put_item(TableName=table, Item=item)
        return
    if not is_ulid(event.message_id):
        raise InvalidQueueMessage("message_id must be a ULID")
    mid = {"S": event.message_id}
    _update_if_newer(
        client,
        table,
        {"connection_id": {"S": cid + STATE_SUFFIX}, "message_id": mid},
        event.type,
        event.state,
        event.seq,
        must_exist=False,
        expires_at=event.expires_at,
    )
    _update_if_newer(
        client,
        table,
        {"connection_id": {"S": cid}, "message_id": mid},
        event.type,
        event.state,
        event.seq,
        must_exist=True,
    )


def catch_up(keys: Sequence[Key], *, table: str | None = None, client=None) -> int:
    """Give just-written messages the changes their state items hold; how many changed.

    Raises ClientError/BotoCoreError (the messages stay in the queue: a retry
    writes and catches up again).
    """
    table = table or settings.CHAT_TABLE_NAME
    client = client or clients.dynamodb()
    changed = 0
    for start in range(0, len(keys), BATCH_GET_MAX):
        pending = [
            {"connection_id": {"S": cid + STATE_SUFFIX}, "message_id": {"S": mid}}
            for cid, mid in keys[start : start + BATCH_GET_MAX]
        ]
        for attempt in range(1, 6):
            response = client.batch_get_item(
                RequestItems={table: {"Keys": pending, "ConsistentRead": True}}
            )
            for state in response.get("Responses", {}).get(table, []):
                changed += _catch_up_one(client, table, state)
            pending = response.get("UnprocessedKeys", {}).get(table, {}).get("Keys", [])
            if not pending:
                break
            time.sleep(backoff_delay(attempt))
        else:
            raise ClientError(
                {"Error": {"Code": "ProvisionedThroughputExceededException"}}, "BatchGetItem"
            )
    return changed


def _catch_up_one(client, table: str, state: dict) -> int:
    key = {
        "connection_id": {"S": state["connection_id"]["S"].removesuffix(STATE_SUFFIX)},
        "message_id": state["message_id"],
    }
    changes = []
    if "deleted_at" in state:
        deleted = {
            "deleted_at": state["deleted_at"]["S"],
            "deleted_by": json.loads(state["deleted_by"]["S"]),
        }
        changes.append(("message_deleted", deleted, int(state["body_rev"]["N"])))
    else:
        if "body_rev" in state:
            edited = {"body": state["body"]["S"], "edited_at": state["edited_at"]["S"]}
            changes.append(("message_edited", edited, int(state["body_rev"]["N"])))
        if "reactions_rev" in state:
            reactions = {"reactions": json.loads(state["reactions"]["S"])}
            changes.append(("reaction", reactions, int(state["reactions_rev"]["N"])))
    return sum(
        _update_if_newer(client, table, key, kind, values, seq, must_exist=True)
        for kind, values, seq in changes
    )


def fetch_record(connection_id: str, message_id: str) -> dict:
    """What DynamoDB knows of a message, for the room stream's record
    (chatsvc.messaging.content): its sender, time and attachments from the
    message item, its latest changes from the state item (which no message
    write touches, so a redelivered message cannot hide them). Fields absent
    when unknown: {} for a message that is not (yet) stored.
    """
    state_key = {
        "connection_id": {"S": connection_id + STATE_SUFFIX},
        "message_id": {"S": message_id},
    }
    message_key = {"connection_id": {"S": connection_id}, "message_id": {"S": message_id}}
    table = settings.CHAT_TABLE_NAME
    response = clients.dynamodb().batch_get_item(
        RequestItems={table: {"Keys": [message_key, state_key], "ConsistentRead": True}}
    )
    items = {item["connection_id"]["S"]: item for item in response["Responses"].get(table, [])}
    if response.get("UnprocessedKeys"):
        raise ClientError({"Error": {"Code": "ThrottlingException"}}, "BatchGetItem")
    record = {}
    if (item := items.get(connection_id)) is not None:
        record.update(sender=item["sender_id"]["S"], ts=item["ts"]["S"])
        if "attachments" in item:
            ids = [a["M"]["id"]["S"] for a in item["attachments"]["L"]]
            record["attachments"] = json.dumps(ids)
    if (state := items.get(connection_id + STATE_SUFFIX)) is not None:
        for name in ("body", "edited_at", "deleted_at", "deleted_by", "reactions"):
            if name in state:
                record[name] = state[name]["S"]
        for name in ("body_rev", "reactions_rev"):
            if name in state:
                record[name] = state[name]["N"]
        if "deleted_at" in state:
            record["deleted"] = "1"
    return record


@dataclass
class WriteResult:
    stored: list[Key] = field(default_factory=list)
    failed: list[Key] = field(default_factory=list)
    retries: int = 0  # extra BatchWriteItem/PutItem attempts after the first
    calls: int = 0
    errors: list[str] = field(default_factory=list)


def backoff_delay(attempt: int, *, base: float = 0.05, cap: float = 2.0) -> float:
    """Exponential backoff with full jitter (attempt 1 is the first retry)."""
    return random.uniform(0, min(cap, base * 2 ** (attempt - 1)))  # noqa: S311


def _error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code", "ClientError")
    return type(exc).__name__


def _is_retryable(exc: Exception) -> bool:
    # Network-level failures (BotoCoreError) leave the outcome unknown; the
    # write is idempotent, so trying again is always safe.
    return isinstance(exc, BotoCoreError) or _error_code(exc) in RETRYABLE_CODES


def write_items(
    *,
    items: Iterable[dict],
    table: str | None = None,
    client=None,
    deadline: float | None = None,
    on_wait: Callable[[float], None] | None = None,
) -> WriteResult:
    """Store items with BatchWriteItem, retrying until stored or `deadline`.

    Duplicate keys are collapsed (DynamoDB rejects them in one request).
    UnprocessedItems and throttling are retried with exponential backoff and
    jitter; a request DynamoDB rejects as invalid is split into single PutItem
    calls so one bad item cannot keep the others out. `deadline` is a
    time.monotonic() value; items not stored by then are reported as failed.
    `on_wait(seconds)` is called before every backoff sleep (the worker extends SQS
    visibility there).
    """
    if deadline is None:
        deadline = time.monotonic() + DEFAULT_WRITE_TIMEOUT
    table = table or settings.CHAT_TABLE_NAME
    client = client or clients.dynamodb()
    unique: dict[Key, dict] = {}
    for item in items:
        unique.setdefault(item_key(item), item)
    result = WriteResult()
    pending = list(unique.values())
    attempt = 0
    while pending:
        chunk, rest = pending[:BATCH_WRITE_MAX], pending[BATCH_WRITE_MAX:]
        try:
            result.calls += 1
            response = client.batch_write_item(
                RequestItems={table: [{"PutRequest": {"Item": item}} for item in chunk]}
            )
        except (ClientError, BotoCoreError) as exc:
            if not _is_retryable(exc):
                result.errors.append(_error_code(exc))
                _write_singly(client, table, chunk, result)
                pending = rest
                continue
            unprocessed = chunk
            result.errors.append(_error_code(exc))
        else:
            unprocessed = [
                request["PutRequest"]["Item"]
                for request in response.get("UnprocessedItems", {}).get(table, [])
            ]
            unprocessed_keys = {item_key(item) for item in unprocessed}
            result.stored.extend(key for key in map(item_key, chunk) if key not in unprocessed_keys)
        if not unprocessed:
            attempt = 0
            pending = rest
            continue
        attempt += 1
        delay = backoff_delay(attempt)
        if time.monotonic() + delay > deadline:
            result.failed.extend(map(item_key, unprocessed))
            pending = rest
            # Past the deadline the remaining chunks get one attempt each.
            continue
        result.retries += 1
        if on_wait is not None:
            on_wait(delay)
        time.sleep(delay)
        # Unprocessed items go first so they are not starved by later chunks.
        pending = unprocessed + rest
    return result


def _write_singly(client, table: str, chunk: Sequence[dict], result: WriteResult) -> None:
    for item in chunk:
        result.calls += 1
        try:
            client.put_item(TableName=table, Item=item)
        except (ClientError, BotoCoreError) as exc:
            result.errors.append(_error_code(exc))
            result.failed.append(item_key(item))
            if _is_retryable(exc):
                continue  # left in the queue; the batch line reports it
            logger.warning(
                "item rejected by DynamoDB",
                extra={
                    "connection_id": item_key(item)[0],
                    "message_id": item_key(item)[1],
                    "error": _error_code(exc),
                },
            )
        else:
            result.stored.append(item_key(item))


def fetch_history(
    *,
    connection_id: str,
    before: str | None = None,
    limit: int = HISTORY_DEFAULT_LIMIT,
    with_revs: bool = False,
) -> tuple[list[dict], str | None]:
    """A page of a room's messages, newest first, and the cursor for the next (older) page.

    `before` is a message id (exclusive); `next` is the id to pass as `before`
    for the following page, or None when there is nothing older. Expired items
    (`expires_at` in the past, not yet removed by TTL) are never returned.
    Raises InvalidHistoryQuery for a bad connection id, cursor or page size.
    """
    if not is_ulid(connection_id):
        raise InvalidHistoryQuery("connection_id must be a ULID")
    if before is not None and not is_ulid(before):
        raise InvalidHistoryQuery("before must be a message id")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= HISTORY_MAX_LIMIT:
        raise InvalidHistoryQuery(f"limit must be an integer from 1 to {HISTORY_MAX_LIMIT}")

    client = clients.dynamodb()
    names = {"#c": "connection_id", "#e": "expires_at"}
    values = {":c": {"S": connection_id}, ":now": {"N": str(int(time.time()))}}
    condition = "#c = :c"
    if before is not None:
        condition += " AND #m < :before"
        names["#m"] = "message_id"
        values[":before"] = {"S": before}
    found: list[dict] = []
    start_key = None
    for _ in range(HISTORY_MAX_QUERIES):
        params = {
            "TableName": settings.CHAT_TABLE_NAME,
            "KeyConditionExpression": condition,
            "FilterExpression": "attribute_not_exists(#e) OR #e >= :now",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
            # One more than needed tells whether an older page exists.
            "Limit": limit + 1 - len(found),
        }
        if start_key is not None:
            params["ExclusiveStartKey"] = start_key
        response = client.query(**params)
        found.extend(response.get("Items", []))
        start_key = response.get("LastEvaluatedKey")
        if len(found) > limit or start_key is None:
            break
    messages = [item_to_message(item, with_revs=with_revs) for item in found[:limit]]
    if len(found) > limit:
        return messages, messages[-1]["id"]
    if start_key is not None:
        # Stopped early among expired items: resume after the last one evaluated.
        return messages, start_key["message_id"]["S"]
    return messages, None
