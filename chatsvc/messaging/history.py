"""Room history: DynamoDB merged with the room's replay log.

The worker writes to DynamoDB a moment after a message is acknowledged; the
replay log has it from the start. A page is the newest `limit` messages older
than `before` from both, each id once, so a late joiner or a reconnecting
client sees the last second of a conversation at once. Ids ascend with seq
within a room, so paging by id is paging by seq.

Messages changed since (edited, deleted, reacted to) are shown as they are
now: the room stream's record of each message, when it has changes newer
than the stored item, is laid over it (chatsvc.messaging.message_state).

Callers check the room belongs to the tenant before calling: DynamoDB is
keyed by ConnectionId alone.
"""

import asyncio
import json

from asgiref.sync import async_to_sync

from chatsvc.attachments.services import with_download_urls
from chatsvc.messaging import runtime
from chatsvc.messaging.dynamo import fetch_history
from chatsvc.messaging.message_state import overlay


def _without_type(frame: str) -> dict:
    message = json.loads(frame)
    del message["type"]
    return message


async def read_history(*, connection_id: str, before: str | None, limit: int):
    """(messages newest first, cursor for the next older page or None)."""
    stored, recent = await asyncio.gather(
        asyncio.to_thread(
            fetch_history,
            connection_id=connection_id,
            before=before,
            limit=limit,
            with_revs=True,
        ),
        # One more than a page tells whether the log holds older messages.
        runtime.room_stream().recent(connection_id, before=before, limit=limit + 1),
    )
    stored_messages, stored_next = stored
    # The log's frame is the message as first sent; the stored item has its
    # persisted changes (edits, tombstone, reactions) and fresh download links.
    merged = {entry.id: _without_type(entry.frame) for entry in recent}
    for message in stored_messages:
        if "seq" not in message and message["id"] in merged:  # stored before sequences
            message["seq"] = merged[message["id"]]["seq"]
        if "attachments" in message:
            message["attachments"] = with_download_urls(message["attachments"])
        merged[message["id"]] = message
    page = sorted(merged.values(), key=lambda message: message["id"], reverse=True)
    more = len(page) > limit or stored_next is not None
    page = page[:limit]
    records = await runtime.room_stream().records(connection_id, [m["id"] for m in page])
    page = [overlay(message, records.get(message["id"])) for message in page]
    return page, (page[-1]["id"] if more and page else None)


def read_history_blocking(*, connection_id: str, before: str | None, limit: int):
    """read_history for synchronous callers (the REST view)."""
    return async_to_sync(read_history)(connection_id=connection_id, before=before, limit=limit)
