"""This event loop's SQS producer and de-duplication store."""

from django.conf import settings

from chatsvc.aws import clients
from chatsvc.core.per_loop import PerLoop
from chatsvc.messaging.dedup import MemoryDedupStore, RedisDedupStore
from chatsvc.messaging.producer import SqsProducer


def _new_producer() -> SqsProducer:
    return SqsProducer(
        client=clients.sqs(),
        queue_url=settings.CHAT_QUEUE_URL,
        max_attempts=settings.CHAT_SQS_MAX_ATTEMPTS,
    )


def _new_dedup_store():
    ttl = settings.CHAT_DEDUP_TTL_SECONDS
    if settings.REDIS_URL:
        return RedisDedupStore(url=settings.REDIS_URL, ttl_seconds=ttl)
    return MemoryDedupStore(ttl_seconds=ttl)


_producers = PerLoop(_new_producer)
_dedup_stores = PerLoop(_new_dedup_store)


def producer() -> SqsProducer:
    # A changed queue URL (settings overridden) gets a producer of its own.
    return _producers.get(stale=lambda p: p.queue_url != settings.CHAT_QUEUE_URL)


def dedup_store():
    return _dedup_stores.get()


async def shutdown() -> None:
    """Flush pending queue batches of this loop (graceful shutdown)."""
    if (current := _producers.pop()) is not None:
        await current.close()
    if (store := _dedup_stores.pop()) is not None:
        await store.close()
