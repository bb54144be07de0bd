"""Per-event-loop singletons: the SQS producer and the dedup store.

Both hold asyncio objects bound to one loop; a server has one loop, tests
have many, so each loop gets its own instances.
"""

import asyncio
import weakref

from django.conf import settings

from chatsvc.aws import clients
from chatsvc.messaging.dedup import MemoryDedupStore, RedisDedupStore
from chatsvc.messaging.producer import SqsProducer

_producers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_dedup_stores: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def producer() -> SqsProducer:
    loop = asyncio.get_running_loop()
    current = _producers.get(loop)
    if current is None or current.queue_url != settings.CHAT_QUEUE_URL:
        current = SqsProducer(
            client=clients.sqs(),
            queue_url=settings.CHAT_QUEUE_URL,
            max_attempts=settings.CHAT_SQS_MAX_ATTEMPTS,
        )
        _producers[loop] = current
    return current


def dedup_store():
    loop = asyncio.get_running_loop()
    current = _dedup_stores.get(loop)
    if current is None:
        if settings.REDIS_URL:
            current = RedisDedupStore(
                url=settings.REDIS_URL, ttl_seconds=settings.CHAT_DEDUP_TTL_SECONDS
            )
        else:
            current = MemoryDedupStore(ttl_seconds=settings.CHAT_DEDUP_TTL_SECONDS)
        _dedup_stores[loop] = current
    return current


async def shutdown() -> None:
    """Flush pending queue batches of this loop (graceful shutdown)."""
    loop = asyncio.get_running_loop()
    if (current := _producers.pop(loop, None)) is not None:
        await current.close()
    if (store := _dedup_stores.pop(loop, None)) is not None:
        await store.close()
