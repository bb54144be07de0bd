"""Changing posted messages: edit, delete, react (docs/protocol.md, "Content events").

Every change is an event on the room's sequence: it gets its own `seq` and
id, goes into the replay log and out to the room like a message (so resume
replays it), and is queued to SQS for the worker to persist. The rules are
checked here against the message's record in the room stream (who sent it,
when, whether it is deleted, who reacted); the stream applies the change and
appends the event in one atomic step only if the record is still the one the
rules were checked against, else the check runs again. A record missing from
the stream is seeded from the replay log or DynamoDB.
"""

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from django.conf import settings

from chatsvc.core.ulid import new_ulid
from chatsvc.messaging import dynamo, runtime
from chatsvc.messaging.actions import enqueue
from chatsvc.messaging.message_state import SHOWN_REACTORS
from chatsvc.messaging.queue_message import parse_timestamp, queue_event, utc_timestamp
from chatsvc.streams import Change, Reaction, RecordChanged, Refused, sent_key
from chatsvc.tenants.models import Tenant

logger = logging.getLogger(__name__)

ATTEMPTS = 5  # a record that changes under us this often in a row: give up (busy message)


class ContentError(Exception):
    """A change the rules refuse; `code` is the protocol's error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Actor:
    """Who makes a change: a user over WebSocket, or the tenant's backend over REST."""

    tenant: Tenant
    id: str | None  # None: the tenant's backend, acting for no user it named
    name: str | None
    moderator: bool
    backend: bool = False  # the tenant's backend (REST), which outranks moderators

    @classmethod
    def of_user(cls, user) -> "Actor":
        return cls(user.tenant, user.id, user.name, user.role == "moderator")

    def public(self) -> dict | None:
        return {"id": self.id, "name": self.name} if self.id is not None else None


@dataclass(frozen=True)
class Done:
    id: str  # the event's id
    seq: int
    ts: str


# --- the rules -------------------------------------------------------------------


async def edit_message(
    *, actor: Actor, connection_id: str, client_id: str, message_id: str, body: str
) -> Done:
    def change(record: dict, now: datetime):
        _require_present(record)
        if record["sender"] != actor.id:
            raise ContentError("forbidden", "you can edit only your own messages")
        window = actor.tenant.message_edit_seconds
        if not window:
            raise ContentError("edits_disabled", "this service does not allow edits")
        if (now - parse_timestamp(record["ts"])).total_seconds() > window:
            raise ContentError(
                "edit_window_passed", f"messages can be edited for {window} s after sending"
            )
        ts = utc_timestamp(now)
        fields = {"body": body, "edited_at": ts}
        frame = {"message_id": message_id, "body": body, "by": actor.public(), "ts": ts}
        return fields, ("body_rev",), frame, {"body": body, "edited_at": ts}

    return await _change("message_edited", actor, connection_id, client_id, message_id, change)


async def delete_message(
    *, actor: Actor, connection_id: str, client_id: str, message_id: str
) -> Done:
    def change(record: dict, now: datetime):
        _require_present(record)
        own = actor.id is not None and record["sender"] == actor.id
        if not (own or actor.moderator):
            raise ContentError("forbidden", "only moderators can delete others' messages")
        ts = utc_timestamp(now)
        by = actor.public()
        fields = {
            "deleted": "1",
            "deleted_at": ts,
            "deleted_by": json.dumps(by),
            "body": False,
            "edited_at": False,
            "reactions": False,
        }
        frame = {"message_id": message_id, "by": by, "moderated": not own, "ts": ts}
        attachments = json.loads(record.get("attachments", "[]"))
        state = {"deleted_at": ts, "deleted_by": by, "attachments": attachments}
        return fields, ("body_rev", "reactions_rev"), frame, state

    return await _change("message_deleted", actor, connection_id, client_id, message_id, change)


async def toggle_reaction(
    *, actor: Actor, connection_id: str, client_id: str, message_id: str, emoji: str
) -> Done:
    """Add the actor's `emoji` to the message, or take it back. The stream applies
    the toggle atomically (no retries however many react at once)."""
    producer = runtime.producer()
    with producer.admission():
        stream = runtime.room_stream()
        key = change_key(actor, connection_id, "reaction", client_id)
        if (first := await stream.first(connection_id, key)) is not None:
            return await resent(producer, stream, actor, connection_id, key, first)
        record = await stream.record(connection_id, message_id)
        seed = None if record is not None else await _seed(stream, connection_id, message_id)
        record = record or seed
        _require_present(record)
        ts = utc_timestamp(datetime.now(UTC))
        frame = {"message_id": message_id, "emoji": emoji, "user": actor.public(), "ts": ts}
        try:
            reacted = await stream.react(
                Reaction(
                    connection_id=connection_id,
                    message_id=message_id,
                    sent_key=key,
                    event_id=new_ulid(),
                    head=event_head("reaction", connection_id),
                    tail="," + _json(frame)[1:-1],
                    seed=seed,
                    emoji=emoji,
                    user_id=actor.id,
                    max_kinds=settings.CHAT_REACTION_KINDS_PER_MESSAGE,
                    max_reactions=settings.CHAT_REACTIONS_PER_MESSAGE,
                    shown=SHOWN_REACTORS,
                    expires_at=expires_at_of(actor.tenant, record["ts"]),
                )
            )
        except RecordChanged:  # the record expired between our read and the toggle
            raise ContentError("busy", "the message is changing; retry") from None
        except Refused as refused:
            raise _refusal(refused.code) from None
        if not reacted.appended.new:  # a resend that raced its first attempt
            return await resent(producer, stream, actor, connection_id, key, reacted.appended)
        return await queue_change(
            producer,
            stream,
            actor,
            key,
            reacted.appended,
            state={"reactions": reacted.reactions},
            expires_at=expires_at_of(actor.tenant, record["ts"]),
        )


def _refusal(code: str) -> ContentError:
    if code == "message_deleted":
        return ContentError(code, "the message was deleted")
    if code == "too_many_kinds":
        kinds = settings.CHAT_REACTION_KINDS_PER_MESSAGE
        return ContentError("too_many_reactions", f"a message can carry at most {kinds} emoji")
    most = settings.CHAT_REACTIONS_PER_MESSAGE
    return ContentError("too_many_reactions", f"a message can carry at most {most} reactions")


def _require_present(record: dict) -> None:
    if record.get("deleted") == "1":
        raise ContentError("message_deleted", "the message was deleted")


# --- the machinery ---------------------------------------------------------------


async def _change(kind, actor, connection_id, client_id, message_id, decide) -> Done:
    producer = runtime.producer()
    with producer.admission():
        stream = runtime.room_stream()
        key = change_key(actor, connection_id, kind, client_id)
        if (first := await stream.first(connection_id, key)) is not None:
            return await resent(producer, stream, actor, connection_id, key, first)
        for _ in range(ATTEMPTS):
            record = await stream.record(connection_id, message_id)
            seed = None
            if record is None:
                seed = record = await _seed(stream, connection_id, message_id)
            fields, seq_fields, frame, state = decide(dict(record), datetime.now(UTC))
            kept = {"state": state, "expires_at": expires_at_of(actor.tenant, record["ts"])}
            try:
                appended = await stream.apply(
                    Change(
                        connection_id=connection_id,
                        message_id=message_id,
                        sent_key=key,
                        event_id=new_ulid(),
                        head=event_head(kind, connection_id),
                        tail="," + _json(frame)[1:],
                        version=record.get("ver", "0"),
                        seed=seed,
                        fields=fields,
                        seq_fields=seq_fields,
                        state=kept,
                    )
                )
                break
            except RecordChanged:
                continue  # changed meanwhile (or seeded by another change): decide again
        else:
            raise ContentError("busy", "the message is changing too fast; retry")
        if not appended.new:  # a resend that raced its first attempt
            return await resent(producer, stream, actor, connection_id, key, appended)
        return await queue_change(producer, stream, actor, key, appended, **kept)


async def queue_change(
    producer, stream, actor, key, appended, *, state: dict, expires_at: int | None
) -> Done:
    """Queue a new event for the worker; once SQS has it, it is acked."""
    event = json.loads(appended.frame)
    body = queue_event(tenant_id=actor.tenant.id, event=event, state=state, expires_at=expires_at)
    cid = event["connection_id"]
    await enqueue(producer, stream, connection_id=cid, sent_key=key, body=body)
    return Done(event["id"], event["seq"], event["ts"])


def change_key(actor: Actor, connection_id: str, kind: str, client_id: str) -> str:
    """The actor's client_id for this kind of change: resends map to the first."""
    return sent_key(
        tenant_id=actor.tenant.id,
        connection_id=connection_id,
        sender_id=actor.id or "",
        client_id=f"{kind}:{client_id}",
    )


def event_head(kind: str, connection_id: str) -> str:
    return '{"type":' + _json(kind) + ',"connection_id":' + _json(connection_id) + ","


async def resent(producer, stream, actor, connection_id, key, first) -> Done:
    """A change sent again: acked already, or queued again exactly as it was the first
    time (the stream kept its state with the client_id; the worker is idempotent)."""
    event = json.loads(first.frame)
    if first.acked:
        return Done(event["id"], event["seq"], event["ts"])
    if first.state:
        kept = json.loads(first.state)
    else:  # a moderation event: it changes no message, and lives as long as a new one
        kept = {"state": {}, "expires_at": expires_at_of(actor.tenant, event["ts"])}
    return await queue_change(producer, stream, actor, key, first, **kept)


async def _seed(stream, connection_id: str, message_id: str) -> dict:
    """The record of a message that has none in the stream (never changed, or the
    record expired or was evicted): who sent it and when, from the replay log or
    DynamoDB, and its persisted changes from DynamoDB. One read per message and
    process at a time, however many change it at once (a lecture reacting)."""
    key = (asyncio.get_running_loop(), connection_id, message_id)
    if (pending := _seeding.get(key)) is None:
        pending = _seeding[key] = asyncio.ensure_future(
            _read_seed(stream, connection_id, message_id)
        )
        pending.add_done_callback(lambda _: _seeding.pop(key, None))
    return dict(await asyncio.shield(pending))


_seeding: dict[tuple, asyncio.Future] = {}  # (event loop, connection_id, message_id) -> read


async def _read_seed(stream, connection_id: str, message_id: str) -> dict:
    entry, stored = await asyncio.gather(
        stream.find(connection_id, message_id),
        asyncio.to_thread(dynamo.fetch_record, connection_id, message_id),
    )
    if entry is not None:
        message = json.loads(entry.frame)
        seed = {"sender": message["sender"]["id"], "ts": message["ts"]}
        if message.get("attachments"):
            seed["attachments"] = json.dumps([a["id"] for a in message["attachments"]])
        return {**stored, **seed}
    if "sender" not in stored:
        raise ContentError("message_not_found", "no such message in this room")
    return stored


def expires_at_of(tenant: Tenant, message_ts: str) -> int | None:
    """A change lives as long as its message: the tenant's retention from the message's time."""
    retention = tenant.retention_days
    return int(parse_timestamp(message_ts).timestamp()) + retention * 86400 if retention else None


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
