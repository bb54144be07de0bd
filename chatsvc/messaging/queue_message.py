"""The queue message: what the web tier puts on SQS and the worker persists.

Contract (docs/architecture.md): {v: 1, id, seq, tenant_id, connection_id,
sender_id, sender_name, body, ts}. `id` is the message ULID, `seq` its place
in the room (absent in messages written before rooms had sequences), `ts` an
ISO-8601 UTC timestamp with milliseconds. Optional `expires_at` (epoch
seconds) carries the tenant's retention so the worker needs no database
lookup.

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

    def as_message(self) -> dict:
        """The message as clients see it (the `message` frame without its type)."""
        message = {"connection_id": self.connection_id, "id": self.id}
        if self.seq is not None:
            message["seq"] = self.seq
        message.update(
            sender={"id": self.sender_id, "name": self.sender_name}, body=self.body, ts=self.ts
        )
        return message

    def frame_template(self) -> tuple[str, str]:
        """The `message` frame's JSON around its `"id":…,"seq":…` members.

        The room stream assigns seq (and may move the id past the room's last)
        while it appends, so it writes those two members in between.
        """
        head = '{"type":"message","connection_id":' + _json(self.connection_id) + ","
        sender = {"id": self.sender_id, "name": self.sender_name}
        tail = f',"sender":{_json(sender)},"body":{_json(self.body)},"ts":{_json(self.ts)}}}'
        return head, tail

    def to_json(self) -> str:
        data = {"v": VERSION, **asdict(self)}
        for optional in ("expires_at", "seq"):
            if data[optional] is None:
                del data[optional]
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
        return cls(
            **{name: data[name] for name in fields},
            expires_at=data.get("expires_at"),
            seq=data.get("seq"),
        )
