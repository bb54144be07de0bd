"""History reads for the WebSocket `history` frame (off the event loop).

Callers check the room belongs to the tenant before calling: DynamoDB is
keyed by ConnectionId alone.
"""

import asyncio

from chatsvc.messaging.dynamo import fetch_history


async def read_history(*, connection_id: str, before: str | None, limit: int):
    return await asyncio.to_thread(
        fetch_history, connection_id=connection_id, before=before, limit=limit
    )
