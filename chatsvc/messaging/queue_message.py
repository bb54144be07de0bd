"""The queue message: what the web tier puts on SQS and the worker persists.

Contract (docs/architecture.md): {v: 1, id, seq, tenant_id, connection_id,
sender_id, sender_name, body, ts, attachments?}. `id` is the message ULID, `seq` its place
in the room (absent in messages written before rooms had sequences), `ts` an
ISO-8601 UTC timestamp with milliseconds. Optional `expires_at` (epoch
seconds) carries the tenant's retention so the worker needs no database
lookup.

A content event (docs/protocol.md: an edit, a deletion, a reaction, a
moderation action) travels as {v: 1, kind: "event", tenant_id, event, state,
expires_at?}: `event` is the sequenced frame as clients saw it, `state` what
the worker persists of it (QueueEvent). A worker older than events leaves
them in the queue as invalid, so they reach the dead-letter queue, not the
floor.

Releases overlap (the worker may run the release before or after the web
tier's), so readers accept this version and the next, and ignore fields they
do not know. The rule for the next version: it may add fields, never remove
or change the meaning of these.
"""

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

VERSION = 1
ACCEPTED_VERSIONS = frozenset({VERSION, VERSION + 1})


def utc_timestamp(moment: datetime | None = None) -> str:
    """The `ts` format: ISO 8601 UTC with milliseconds and a Z."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_timestamp(ts: str) -> datetime:
    return datetime.fromisoformat(ts.replace("Z", "+00:00"))


def _json(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class InvalidQueueMessage(ValueError):
    """A queue body that is not a v1 chat message."""


@dataclass(frozen=True, slots=True)
class QueueMessage:
    id: str
    tenant_id: str
    connection_id: str
    sender_id: str
    sender_name: str
    body: str
    ts: str
    expires_at: int | None = None
    seq: int | None = None
    # [{id, name, content_type, size, key}] (chatsvc.attachments.services.claim)
    attachments: tuple[dict, ...] | None = None

    def as_message(self) -> dict:
        """The message as clients see it (the `message` frame without its type)."""
        message = {"connection_id": self.connection_id, "id": self.id}
        if self.seq is not None:
            message["seq"] = self.seq
        message.update(
            sender={"id": self.sender_id, "name": self.sender_name}, body=self.body, ts=self.ts
        )
        return message

    def frame_template(self, attachments: list[dict] | None = None) -> tuple[str, str]:
        """The `message` frame's JSON around its `"id":…,"seq":…` members.

        The room stream assigns seq (and may move the id past the room's last)
        while it appends, so it writes those two members in between.
        `attachments` are as clients see them (with download URLs).
        """
        head = '{"type":"message","connection_id":' + _json(self.connection_id) + ","
        sender = {"id": self.sender_id, "name": self.sender_name}
        tail = f',"sender":{_json(sender)},"body":{_json(self.body)},"ts":{_json(self.ts)}'
        if attachments:
            tail += f',"attachments":{_json(attachments)}'
        return head, tail + "}"

    def to_json(self) -> str:
        data = {"v": VERSION, **asdict(self)}
        for optional in ("expires_at", "seq", "attachments"):
            if data[optional] is None:
                del data[optional]
        if "attachments" in data:
            data["attachments"] = list(data["attachments"])
        return _json(data)

    @classmethod
    def from_json(cls, raw: str) -> "QueueMessage":
        try:
            data = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise InvalidQueueMessage(f"not JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("v") not in ACCEPTED_VERSIONS:
            raise InvalidQueueMessage(
                f"not a message object of version {sorted(ACCEPTED_VERSIONS)}"
            )
        fields = ("id", "tenant_id", "connection_id", "sender_id", "sender_name", "body", "ts")
        missing = [name for name in fields if not isinstance(data.get(name), str)]
        if missing:
            raise InvalidQueueMessage(f"missing or non-string fields: {', '.join(missing)}")
        for optional in ("expires_at", "seq"):
            value = data.get(optional)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise InvalidQueueMessage(f"{optional} must be an integer")
        attachments = data.get("attachments")
        if attachments is not None and not _attachments_valid(attachments):
            raise InvalidQueueMessage(
                "attachments must be a list of {id, name, content_type, size, key}"
            )
        return cls(
            **{name: data[name] for name in fields},
            expires_at=data.get("expires_at"),
            seq=data.get("seq"),
            attachments=tuple(attachments) if attachments else None,
        )


def _attachments_valid(attachments) -> bool:
    strings = ("id", "name", "content_type", "key")
    return isinstance(attachments, list) and all(
        isinstance(a, dict)
        and all(isinstance(a.get(name), str) for name in strings)
        and isinstance(a.get("size"), int)
        for a in attachments
    )


EVENT_TYPES = frozenset({"message_edited", "message_deleted", "reaction", "moderation"})


def queue_event(*, tenant_id: str, event: dict, state: dict, expires_at: int | None) -> str:
    data = {"v": VERSION, "kind": "event", "tenant_id": tenant_id, "event": event, "state": state}
    if expires_at is not None:
        data["expires_at"] = expires_at
    return _json(data)


@dataclass(frozen=True, slots=True)
class QueueEvent:
    tenant_id: str
    event: dict  # the frame: type, connection_id, id, seq, ts, message_id (but moderation), ...
    state: dict
    expires_at: int | None = None

    @property
    def type(self) -> str:
        return self.event["type"]

    @property
    def connection_id(self) -> str:
        return self.event["connection_id"]

    @property
    def id(self) -> str:
        return self.event["id"]

    @property
    def seq(self) -> int:
        return self.event["seq"]

    @property
    def message_id(self) -> str | None:
        return self.event.get("message_id")


def parse(raw: str) -> QueueMessage | QueueEvent:
    """A queue body: a chat message or a content event (InvalidQueueMessage if neither)."""
    try:
        data = json.loads(raw)
    except (TypeError, ValueError) as exc:
        raise InvalidQueueMessage(f"not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("kind") != "event":
        return QueueMessage.from_json(raw)
    if data.get("v") not in ACCEPTED_VERSIONS:
        raise InvalidQueueMessage(f"not an event object of version {sorted(ACCEPTED_VERSIONS)}")
    event, state = data.get("event"), data.get("state")
    if not isinstance(event, dict) or not isinstance(state, dict):
        raise InvalidQueueMessage("an event needs 'event' and 'state' objects")
    if event.get("type") not in EVENT_TYPES:
        raise InvalidQueueMessage("unknown event type")
    for name in ("connection_id", "id", "ts"):
        if not isinstance(event.get(name), str):
            raise InvalidQueueMessage(f"event.{name} must be a string")
    if event["type"] != "moderation" and not isinstance(event.get("message_id"), str):
        raise InvalidQueueMessage("event.message_id must be a string")
    seq, expires_at = event.get("seq"), data.get("expires_at")
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise InvalidQueueMessage("event.seq must be an integer")
    if expires_at is not None and (not isinstance(expires_at, int) or isinstance(expires_at, bool)):
        raise InvalidQueueMessage("expires_at must be an integer")
    if not isinstance(data.get("tenant_id"), str):
        raise InvalidQueueMessage("tenant_id must be a string")
    return QueueEvent(data["tenant_id"], event, state, expires_at)
