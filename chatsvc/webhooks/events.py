"""Webhook events of what the worker persisted: messages and content events.

The worker records them in the outbox after DynamoDB has stored their
subjects and before it deletes them from SQS, so a message is announced only
once it is in history, and at least once (recording is idempotent on the
event id: the message's or the content event's).
"""

from chatsvc.messaging.queue_message import QueueEvent, QueueMessage
from chatsvc.webhooks import outbox

# Content event frame type -> webhook event type.
TYPES = {
    "message_edited": outbox.MESSAGE_EDITED,
    "message_deleted": outbox.MESSAGE_DELETED,
    "reaction": outbox.REACTION_CHANGED,
    "moderation": outbox.MODERATION_ACTION,
}


def of_message(message: QueueMessage) -> dict:
    data = message.as_message()
    if message.attachments:  # metadata only: keys stay inside, links expire
        data["attachments"] = [
            {name: a[name] for name in ("id", "name", "content_type", "size")}
            for a in message.attachments
        ]
    return _event(message.id, outbox.MESSAGE_CREATED, message.tenant_id, data)


def of_content_event(event: QueueEvent) -> dict:
    data = {k: v for k, v in event.event.items() if k not in ("type", "id", "ts")}
    return _event(event.id, TYPES[event.type], event.tenant_id, data, at=event.event["ts"])


def _event(event_id: str, kind: str, tenant_id: str, data: dict, *, at: str | None = None):
    return {
        "id": event_id,
        "type": kind,
        "tenant_id": tenant_id,
        "connection_id": data["connection_id"],
        "occurred_at": at or data["ts"],
        "data": data,
    }
