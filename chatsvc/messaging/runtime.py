"""This event loop's SQS producer and room stream."""

from django.conf import settings

from chatsvc.aws import clients
from chatsvc.core.per_loop import PerLoop
from chatsvc.messaging.producer import SqsProducer
from chatsvc.streams import Window, memory_stream, redis_stream


def _new_producer() -> SqsProducer:
    return SqsProducer(
        client=clients.sqs_sender(),
        queue_url=settings.CHAT_QUEUE_URL,
        max_attempts=settings.CHAT_SQS_MAX_ATTEMPTS,
        deadline_seconds=settings.CHAT_SEND_DEADLINE_SECONDS,
        max_backlog=settings.CHAT_SEND_BACKLOG,
    )


def replay_window() -> Window:
    return Window(
        keep_messages=settings.CHAT_REPLAY_MESSAGES,
        keep_seconds=settings.CHAT_REPLAY_SECONDS,
        max_messages=max(settings.CHAT_REPLAY_MAX_MESSAGES, settings.CHAT_REPLAY_MESSAGES),
        sent_ttl_seconds=settings.CHAT_DEDUP_TTL_SECONDS,
    )


def _new_room_stream():
    if settings.REDIS_URL:
        return redis_stream.RedisRoomStream(url=settings.REDIS_URL, window=replay_window())
    return memory_stream.MemoryRoomStream(window=replay_window())


_producers = PerLoop(_new_producer)
_room_streams = PerLoop(_new_room_stream)


def producer() -> SqsProducer:
    # A changed queue URL (settings overridden) gets a producer of its own.
    return _producers.get(stale=lambda p: p.queue_url != settings.CHAT_QUEUE_URL)


def room_stream():
    return _room_streams.get()


def init_room(connection_id: str) -> None:
    """Start a new room's stream at seq 0 (synchronous: room creation)."""
    if settings.REDIS_URL:
        redis_stream.init_room_blocking(settings.REDIS_URL, connection_id)
    else:
        memory_stream.init_room(connection_id)


def publish_room_event(connection_id: str, payload: str) -> None:
    """Publish an event to the room's subscribers in every process (synchronous callers).

    Raises StreamUnavailable when Redis cannot be reached."""
    if settings.REDIS_URL:
        redis_stream.publish_event_blocking(settings.REDIS_URL, connection_id, payload)
    else:
        memory_stream.publish_event(connection_id, payload)


async def shutdown(*, grace_seconds: float | None = None) -> None:
    """Flush pending queue batches of this loop (graceful shutdown)."""
    if (current := _producers.pop()) is not None:
        await current.close(grace_seconds)
    if (stream := _room_streams.pop()) is not None:
        await stream.close()
