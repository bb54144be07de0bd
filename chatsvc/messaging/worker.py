"""The queue worker: SQS -> DynamoDB, at least once, idempotently.

Each poller thread long-polls the queue, lingers to fill a batch (so that at
sustained load every ReceiveMessage and DeleteMessageBatch carries 10
messages and every BatchWriteItem 25 items), writes the batch to DynamoDB and
deletes from SQS only what DynamoDB has stored. Anything not stored stays in
the queue: it is received again after the visibility timeout and, after the
queue's maxReceiveCount, lands in the dead-letter queue. See docs/operations.md.
"""

import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field, fields

from botocore.exceptions import BotoCoreError, ClientError

from chatsvc.attachments.services import delete_objects
from chatsvc.messaging import dynamo
from chatsvc.messaging.queue_message import InvalidQueueMessage, QueueEvent, QueueMessage, parse
from chatsvc.usage import recorder as usage
from chatsvc.webhooks import events as webhook_events
from chatsvc.webhooks import outbox

logger = logging.getLogger(__name__)

SQS_BATCH_MAX = 10  # ReceiveMessage, DeleteMessageBatch, ChangeMessageVisibilityBatch
SQS_MAX_WAIT_SECONDS = 20
# Two BatchWriteItem calls and five full receives/deletes: the cheapest batch.
DEFAULT_BATCH_SIZE = 50
MAX_BATCH_SIZE = 100
# Extend visibility once this fraction of the timeout has passed since receipt.
VISIBILITY_EXTEND_AT = 0.5
DELETE_ATTEMPTS = 3
# Drain mode is for scripts: an unreachable queue must end in an error, not a hang.
ONCE_MAX_RECEIVE_FAILURES = 5


@dataclass(frozen=True, kw_only=True)
class WorkerOptions:
    queue_url: str
    table: str
    pollers: int = 1
    batch_size: int = DEFAULT_BATCH_SIZE
    linger: float = 0.5  # seconds to keep receiving once a batch has its first message
    wait_seconds: int = SQS_MAX_WAIT_SECONDS  # long-poll wait of the first receive of a batch
    write_timeout: float = dynamo.DEFAULT_WRITE_TIMEOUT  # retrying DynamoDB per batch
    once: bool = False  # drain: exit when a receive finds the queue empty

    def __post_init__(self):
        if not self.queue_url:
            raise ValueError("queue_url is required (CHAT_QUEUE_URL)")
        if not self.table:
            raise ValueError("table is required (CHAT_TABLE_NAME)")
        if self.pollers < 1:
            raise ValueError("pollers must be at least 1")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be from 1 to {MAX_BATCH_SIZE}")
        if self.linger < 0:
            raise ValueError("linger must not be negative")
        if not 0 <= self.wait_seconds <= SQS_MAX_WAIT_SECONDS:
            raise ValueError(f"wait_seconds must be from 0 to {SQS_MAX_WAIT_SECONDS}")
        if self.write_timeout <= 0:
            raise ValueError("write_timeout must be positive")


@dataclass(frozen=True, slots=True)
class Received:
    """One SQS delivery of a queue message."""

    sqs_message_id: str
    receipt_handle: str
    body: str
    sent_at_ms: int
    receive_count: int
    received_at: float  # time.monotonic()

    @classmethod
    def from_sqs(cls, message: dict, *, received_at: float) -> "Received":
        attributes = message.get("Attributes", {})
        return cls(
            sqs_message_id=message["MessageId"],
            receipt_handle=message["ReceiptHandle"],
            body=message.get("Body", ""),
            sent_at_ms=int(attributes.get("SentTimestamp", 0)),
            receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
            received_at=received_at,
        )


@dataclass
class WorkerStats:
    batches: int = 0
    received: int = 0
    stored: int = 0
    events: int = 0  # content events persisted (edits, deletions, reactions, moderation)
    caught_up: int = 0  # stored messages given changes that were persisted before them
    duplicates: int = 0
    invalid: int = 0
    failed: int = 0
    retried: int = 0
    deleted: int = 0
    delete_failed: int = 0
    extended: int = 0
    receive_errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, other: "WorkerStats") -> None:
        with self._lock:
            for item in fields(self):
                if item.name != "_lock":
                    setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))

    def as_dict(self) -> dict:
        with self._lock:
            return {
                item.name: getattr(self, item.name) for item in fields(self) if item.name != "_lock"
            }


class QueueWorker:
    """Consumes the chat queue into the messages table until stopped (or drained)."""

    def __init__(self, *, options: WorkerOptions, sqs, dynamodb):
        self.options = options
        self.sqs = sqs
        self.dynamodb = dynamodb
        self.stats = WorkerStats()
        self._stopping = threading.Event()
        self._visibility_timeout: int | None = None
        self.gave_up = False  # drain mode only: the queue could not be read

    def stop(self) -> None:
        """Stop receiving; batches in flight are finished. Safe from signal handlers."""
        self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def run(self) -> WorkerStats:
        """Poll until stop() (or, with `once`, until the queue is empty); then return."""
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.options.queue_url, AttributeNames=["VisibilityTimeout"]
        )["Attributes"]
        self._visibility_timeout = int(attributes["VisibilityTimeout"])
        logger.info(
            "worker started",
            extra={
                "pollers": self.options.pollers,
                "batch_size": self.options.batch_size,
                "linger_ms": round(self.options.linger * 1000),
                "wait_seconds": self.options.wait_seconds,
                "visibility_timeout": self._visibility_timeout,
                "once": self.options.once,
            },
        )
        threads = [
            threading.Thread(target=self._poll, name=f"poller-{number}", args=(number,))
            for number in range(self.options.pollers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            # Short joins keep the main thread responsive to signals.
            while thread.is_alive():
                thread.join(0.2)
        logger.info("worker stopped", extra=self.stats.as_dict())
        return self.stats

    # -- one poller ---------------------------------------------------------------

    def _poll(self, number: int) -> None:
        receive_failures = 0
        while not self.stopping:
            batch, drained, errors = self._collect()
            receive_failures = receive_failures + 1 if errors and not batch else 0
            if batch:
                try:
                    self._process(batch, poller=number)
                except Exception:
                    # Nothing unstored was deleted; SQS delivers the batch again.
                    logger.exception("batch failed", extra={"poller": number})
            if drained and self.options.once:
                return
            if self.options.once and receive_failures >= ONCE_MAX_RECEIVE_FAILURES:
                self.gave_up = True
                return
            if receive_failures:
                self._stopping.wait(dynamo.backoff_delay(receive_failures, base=0.5, cap=10))

    def _collect(self) -> tuple[list[Received], bool, int]:
        """Receive up to batch_size messages; (batch, queue looked empty, receive errors).

        The first receive long-polls. While receives come back full the queue
        is deep and reading goes on; the first short one means the queue is
        drained for now, so the poller waits out the rest of the linger window
        (one pause, not many small receives) and reads what has arrived. The
        window ends `linger` after the oldest message was sent.
        """
        options = self.options
        batch: list[Received] = []
        errors = 0
        deadline = None
        while len(batch) < options.batch_size and not self.stopping:
            want = min(SQS_BATCH_MAX, options.batch_size - len(batch))
            # Follow-up receives long-poll too (all SQS servers are asked), but
            # only for a second: they return at once when anything is there.
            wait = options.wait_seconds if not batch else min(1, options.wait_seconds)
            try:
                response = self.sqs.receive_message(
                    QueueUrl=options.queue_url,
                    MaxNumberOfMessages=want,
                    WaitTimeSeconds=wait,
                    MessageSystemAttributeNames=["SentTimestamp", "ApproximateReceiveCount"],
                )
            except (ClientError, BotoCoreError) as exc:
                errors += 1
                self.stats.add(WorkerStats(receive_errors=1))
                logger.warning("receive failed", extra={"error": _error_code(exc)})
                break
            now = time.monotonic()
            messages = [
                Received.from_sqs(message, received_at=now)
                for message in response.get("Messages", [])
            ]
            if not messages and not batch:
                return batch, True, errors
            batch.extend(messages)
            if deadline is None:
                # Linger bounds how long the oldest message waits for its batch:
                # one that queued while the last batch was written has waited already.
                oldest_ms = min(m.sent_at_ms for m in messages) or time.time() * 1000
                waited = min(max(0.0, time.time() - oldest_ms / 1000), options.linger)
                deadline = now + options.linger - waited
            if len(messages) == want:
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._stopping.wait(remaining)
        return batch, False, errors

    def _process(self, batch: list[Received], *, poller: int) -> None:
        started = time.monotonic()
        stats = WorkerStats(batches=1, received=len(batch))
        handles: dict[dynamo.Key, list[Received]] = defaultdict(list)
        items: list[dict] = []
        messages: dict[dynamo.Key, QueueMessage] = {}
        events: list[tuple[QueueEvent, Received]] = []
        for delivery in batch:
            try:
                parsed = parse(delivery.body)
                if isinstance(parsed, QueueEvent):
                    events.append((parsed, delivery))
                    continue
                item = dynamo.to_item(parsed)
                messages[dynamo.item_key(item)] = parsed
            except InvalidQueueMessage as exc:
                stats.invalid += 1
                _log_invalid(delivery, exc)
                continue
            key = dynamo.item_key(item)
            if key in handles:
                stats.duplicates += 1
            else:
                items.append(item)
            handles[key].append(delivery)

        extender = _VisibilityExtender(
            self, [d for ds in handles.values() for d in ds] + [d for _, d in events]
        )
        result = dynamo.write_items(
            items=items,
            table=self.options.table,
            client=self.dynamodb,
            deadline=started + self.options.write_timeout,
            on_wait=extender.maybe_extend,
        )
        stored = result.stored
        try:
            stats.caught_up = dynamo.catch_up(
                stored, table=self.options.table, client=self.dynamodb
            )
        except (ClientError, BotoCoreError) as exc:
            # Left in the queue: the redelivery writes them and catches up again.
            result.errors.append(_error_code(exc))
            stored = []
        stats.stored = len(stored)
        stats.failed = len(result.failed) + len(result.stored) - len(stored)
        stats.retried = result.retries
        to_delete = [delivery for key in stored for delivery in handles[key]]
        stored_events: list[QueueEvent] = []
        # Events after messages, in room order: an edit finds its message stored.
        for event, delivery in sorted(events, key=lambda pair: pair[0].seq):
            try:
                dynamo.store_event(event, table=self.options.table, client=self.dynamodb)
                _delete_attachments(event)
            except InvalidQueueMessage as exc:
                stats.invalid += 1
                _log_invalid(delivery, exc)
            except Exception as exc:  # left queued: its redelivery tries again
                stats.failed += 1
                result.errors.append(_error_code(exc))
                if not isinstance(exc, (ClientError, BotoCoreError)):
                    logger.exception("storing a content event failed")
            else:
                stats.events += 1
                stored_events.append(event)
                to_delete.append(delivery)
        persisted = [messages[key] for key in stored]
        _announce(persisted, stored_events)
        oldest_sent = min((d.sent_at_ms for d in batch if d.sent_at_ms), default=0)
        oldest_age_ms = int(time.time() * 1000) - oldest_sent if oldest_sent else None
        usage.record_batch(persisted, stored_events, oldest_age_ms)  # never raises
        stats.extended = extender.extended
        stats.deleted, stats.delete_failed = self._delete(to_delete)
        self.stats.add(stats)

        fields_ = {
            "poller": poller,
            "received": stats.received,
            "stored": stats.stored,
            "events": stats.events,
            "caught_up": stats.caught_up,
            "duplicates": stats.duplicates,
            "retried": stats.retried,
            "failed": stats.failed,
            "invalid": stats.invalid,
            "deleted": stats.deleted,
            "delete_failed": stats.delete_failed,
            "extended": stats.extended,
            "max_receive_count": max(d.receive_count for d in batch),
            "oldest_age_ms": oldest_age_ms,
            "duration_ms": round((time.monotonic() - started) * 1000),
        }
        if result.errors:
            fields_["errors"] = sorted(set(result.errors))
        level = (
            logging.WARNING
            if stats.failed or stats.invalid or stats.delete_failed
            else logging.INFO
        )
        logger.log(
            level,
            "batch " + " ".join(f"{k}={v}" for k, v in fields_.items() if k != "errors"),
            extra=fields_,
        )

    def _delete(self, deliveries: list[Received]) -> tuple[int, int]:
        """Delete stored deliveries from SQS; (deleted, failed). A failure only means redelivery."""
        # The same receipt handle twice in one request is rejected as a whole.
        pending = list({d.receipt_handle: d for d in deliveries}.values())
        deleted = failed = 0
        for start in range(0, len(pending), SQS_BATCH_MAX):
            chunk = pending[start : start + SQS_BATCH_MAX]
            for attempt in range(1, DELETE_ATTEMPTS + 1):
                try:
                    response = self.sqs.delete_message_batch(
                        QueueUrl=self.options.queue_url,
                        Entries=[
                            {"Id": str(index), "ReceiptHandle": d.receipt_handle}
                            for index, d in enumerate(chunk)
                        ],
                    )
                except (ClientError, BotoCoreError) as exc:
                    if attempt == DELETE_ATTEMPTS:
                        failed += len(chunk)
                        logger.warning("delete failed", extra={"error": _error_code(exc)})
                    else:
                        time.sleep(dynamo.backoff_delay(attempt))
                    continue
                deleted += len(response.get("Successful", []))
                retry = []
                for entry in response.get("Failed", []):
                    if entry.get("SenderFault"):
                        # e.g. an expired receipt handle: another delivery will delete it.
                        failed += 1
                        logger.warning(
                            "delete rejected",
                            extra={"code": entry.get("Code"), "message": entry.get("Message")},
                        )
                    else:
                        retry.append(chunk[int(entry["Id"])])
                if not retry:
                    break
                if attempt == DELETE_ATTEMPTS:
                    failed += len(retry)
                    break
                chunk = retry
                time.sleep(dynamo.backoff_delay(attempt))
        return deleted, failed


class _VisibilityExtender:
    """Keeps a slow batch invisible so no other poller takes it while it is retried."""

    def __init__(self, worker: QueueWorker, batch: list[Received]):
        self.worker = worker
        self.batch = batch
        self.extended = 0
        self._last = min((d.received_at for d in batch), default=time.monotonic())

    def maybe_extend(self, sleep_seconds: float = 0.0) -> None:
        """Extend if, by the end of the coming sleep, half the timeout will have passed."""
        timeout = self.worker._visibility_timeout or 0
        elapsed_after_sleep = time.monotonic() + sleep_seconds - self._last
        if not timeout or elapsed_after_sleep < timeout * VISIBILITY_EXTEND_AT:
            return
        self._last = time.monotonic()
        handles = list({d.receipt_handle for d in self.batch})
        for start in range(0, len(handles), SQS_BATCH_MAX):
            chunk = handles[start : start + SQS_BATCH_MAX]
            try:
                response = self.worker.sqs.change_message_visibility_batch(
                    QueueUrl=self.worker.options.queue_url,
                    Entries=[
                        {"Id": str(index), "ReceiptHandle": handle, "VisibilityTimeout": timeout}
                        for index, handle in enumerate(chunk)
                    ],
                )
            except (ClientError, BotoCoreError) as exc:
                # Worst case the batch is delivered twice; writes are idempotent.
                logger.warning("visibility extension failed", extra={"error": _error_code(exc)})
                continue
            self.extended += len(response.get("Successful", []))


def _announce(messages: list[QueueMessage], events: list[QueueEvent]) -> None:
    """Webhook events for what is now stored, before SQS forgets it (at least once).

    A database outage must not hold up persistence: then these events are
    lost, and the error log says how many (chatsvc.webhooks, docs/webhooks.md).
    """
    announced = [webhook_events.of_message(m) for m in messages]
    announced += [webhook_events.of_content_event(e) for e in events]
    if not announced:
        return
    try:
        outbox.record(announced)
    except Exception:
        logger.exception("webhook events not recorded", extra={"events": len(announced)})


def _delete_attachments(event: QueueEvent) -> None:
    """A deleted message's files go after its tombstone is stored (both idempotent)."""
    if event.type == "message_deleted" and event.state.get("attachments"):
        delete_objects(
            tenant_id=event.tenant_id,
            connection_id=event.connection_id,
            ids=event.state["attachments"],
        )


def _log_invalid(delivery: Received, exc: Exception) -> None:
    # The body is user content: log where it is, not what it says.
    logger.warning(
        "invalid queue message left for the dead-letter queue",
        extra={
            "sqs_message_id": delivery.sqs_message_id,
            "receive_count": delivery.receive_count,
            "bytes": len(delivery.body.encode()),
            "error": str(exc),
        },
    )


def _error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code", "ClientError")
    return type(exc).__name__
