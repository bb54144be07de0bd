"""The queue message: what the web tier puts on SQS and the worker persists.

Contract (docs/architecture.md): {v: 1, id, tenant_id, connection_id,
sender_id, sender_name, body, ts}. `id` is the message ULID, `ts` an ISO-8601
UTC timestamp with milliseconds. Optional `expires_at` (epoch seconds) carries
the tenant's retention so the worker needs no database lookup.
"""

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

VERSION = 1


def utc_timestamp(moment: datetime | None = None) -> str:
    """The `ts` format: ISO 8601 UTC with milliseconds and a Z."""
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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

    def as_message(self) -> dict:
        """The message as clients see it (the `message` frame without its type)."""
        return {
            "connection_id": self.connection_id,
            "id": self.id,
            "sender": {"id": self.sender_id, "name": self.sender_name},
            "body": self.body,
            "ts": self.ts,
        }

    def to_json(self) -> str:
        data = {"v": VERSION, **asdict(self)}
        if self.expires_at is None:
            del data["expires_at"]
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str) -> "QueueMessage":
        try:
            data = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise InvalidQueueMessage(f"not JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("v") != VERSION:
            raise InvalidQueueMessage("not a v1 message object")
        fields = ("id", "tenant_id", "connection_id", "sender_id", "sender_name", "body", "ts")
        missing = [name for name in fields if not isinstance(data.get(name), str)]
        if missing:
            raise InvalidQueueMessage(f"missing or non-string fields: {', '.join(missing)}")
        expires_at = data.get("expires_at")
        if expires_at is not None and not isinstance(expires_at, int):
            raise InvalidQueueMessage("expires_at must be an integer")
        return cls(**{name: data[name] for name in fields}, expires_at=expires_at)
