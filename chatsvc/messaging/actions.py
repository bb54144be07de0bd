"""Posting a chat message: the one place that creates messages.

The message gets its id here, is fanned out to the room at once, and is
queued to SQS; the caller acks only after SQS accepted it. A resend with the
same client_id maps to the first message: it is re-queued (idempotent
downstream) if it was never acked, and only re-acked if it was.
"""

from dataclasses import dataclass
from datetime import UTC, datetime

from chatsvc.core.ulid import new_ulid
from chatsvc.messaging import runtime
from chatsvc.messaging.queue_message import QueueMessage, utc_timestamp
from chatsvc.realtime import events
from chatsvc.realtime.tokens import ChatUser


@dataclass(frozen=True)
class Posted:
    id: str
    ts: str


def new_message(*, user: ChatUser, connection_id: str, body: str) -> QueueMessage:
    now = datetime.now(UTC)
    retention = user.tenant.retention_days
    return QueueMessage(
        id=new_ulid(),
        tenant_id=user.tenant.id,
        connection_id=connection_id,
        sender_id=user.id,
        sender_name=user.name,
        body=body,
        ts=utc_timestamp(now),
        expires_at=int(now.timestamp()) + retention * 86400 if retention else None,
    )


async def post_message(*, user: ChatUser, connection_id: str, client_id: str, body: str) -> Posted:
    """Broadcast and enqueue; raises EnqueueFailed when SQS does not accept it."""
    dedup = runtime.dedup_store()
    key = f"{user.tenant.id}:{connection_id}:{user.id}:{client_id}"
    message = new_message(user=user, connection_id=connection_id, body=body)
    record = {"message": message.to_json(), "acked": False}
    first = await dedup.claim(key, record)
    if first is None:
        await events.broadcast(connection_id, {"type": "message", **message.as_message()})
    else:
        record, message = first, QueueMessage.from_json(first["message"])
        if first["acked"]:
            return Posted(message.id, message.ts)
    await runtime.producer().send(record["message"])
    await dedup.mark_acked(key, record)
    return Posted(message.id, message.ts)
