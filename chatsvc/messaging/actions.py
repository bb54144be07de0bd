"""Posting a chat message: the one place that creates messages.

A message gets its id, its room `seq`, its place in the room's replay log
and its live fan-out in one atomic step (the room stream), then it is queued
to SQS; the caller acks only after SQS accepted it. The stream remembers
each sender's client_id, so a resend maps to the first message: it was
shown already (the stream never publishes without logging, nor the reverse)
and is re-queued if it was never acked (idempotent downstream), or only
re-acked if it was.
"""

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from chatsvc.attachments.services import claim, with_download_urls
from chatsvc.core.ulid import new_ulid
from chatsvc.messaging import runtime
from chatsvc.messaging.queue_message import QueueMessage, parse_timestamp, utc_timestamp
from chatsvc.realtime.tokens import ChatUser
from chatsvc.streams import StreamUnavailable, sent_key

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Posted:
    id: str
    seq: int
    ts: str


def _expires_at(user: ChatUser, ts: str) -> int | None:
    """The tenant's retention, counted from the message's own time (the same on every resend)."""
    retention = user.tenant.retention_days
    return int(parse_timestamp(ts).timestamp()) + retention * 86400 if retention else None


def new_message(
    *, user: ChatUser, connection_id: str, body: str, attachments: list[dict] | None = None
) -> QueueMessage:
    ts = utc_timestamp(datetime.now(UTC))
    return QueueMessage(
        id=new_ulid(),
        tenant_id=user.tenant.id,
        connection_id=connection_id,
        sender_id=user.id,
        sender_name=user.name,
        body=body,
        ts=ts,
        expires_at=_expires_at(user, ts),
        attachments=tuple(attachments) if attachments else None,
    )


def _sequenced(user: ChatUser, frame: str, attachments: list[dict] | None) -> QueueMessage:
    """The queue message of a frame the stream wrote (with its final id and seq)."""
    data = json.loads(frame)
    return QueueMessage(
        id=data["id"],
        seq=data["seq"],
        tenant_id=user.tenant.id,
        connection_id=data["connection_id"],
        sender_id=data["sender"]["id"],
        sender_name=data["sender"]["name"],
        body=data["body"],
        ts=data["ts"],
        expires_at=_expires_at(user, data["ts"]),
        attachments=tuple(attachments) if attachments else None,
    )


async def post_message(
    *,
    user: ChatUser,
    connection_id: str,
    client_id: str,
    body: str,
    attachment_ids: list[str] | None = None,
) -> Posted:
    """Sequence, fan out and enqueue one message (with the uploads it names).

    Raises QueueBusy (refused before anything happened), AttachmentError (an
    upload is not the sender's, not uploaded, or not what it claimed to be;
    nothing happened), StreamUnavailable (Redis unreachable; nothing
    happened) or EnqueueFailed (shown, not yet stored: resend the same client_id).
    """
    producer = runtime.producer()
    with producer.admission():
        return await _post(producer, user, connection_id, client_id, body, attachment_ids)


async def _post(producer, user, connection_id, client_id, body, attachment_ids) -> Posted:
    stream = runtime.room_stream()
    key = sent_key(
        tenant_id=user.tenant.id,
        connection_id=connection_id,
        sender_id=user.id,
        client_id=client_id,
    )
    # Claimed by this client_id: a resend claims the same uploads again.
    attachments = (
        await claim(user, connection_id, attachment_ids, ref=key) if attachment_ids else None
    )
    draft = new_message(user=user, connection_id=connection_id, body=body, attachments=attachments)
    head, tail = draft.frame_template(with_download_urls(attachments) if attachments else None)
    appended = await stream.append(
        connection_id=connection_id, sent_key=key, message_id=draft.id, head=head, tail=tail
    )
    message = _sequenced(user, appended.frame, attachments)
    posted = Posted(message.id, message.seq, message.ts)
    if appended.acked:
        return posted
    await enqueue(
        producer, stream, connection_id=connection_id, sent_key=key, body=message.to_json()
    )
    return posted


async def enqueue(producer, stream, *, connection_id: str, sent_key: str, body: str) -> None:
    """Queue a sequenced frame's record to SQS, then remember that it was acked."""
    await producer.send(body)
    try:
        await stream.mark_acked(connection_id=connection_id, sent_key=sent_key)
    except StreamUnavailable:
        # SQS has it: the ack stands. A resend would only queue it again.
        logger.warning("could not record an ack", extra={"connection_id": connection_id})
