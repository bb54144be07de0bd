"""Batching SQS producer: many `send()` calls become few SendMessageBatch calls.

Batches size themselves to the load, with no fixed linger: when no call is
running a message goes out at once; while one runs, new messages gather and
leave together when it returns, or as soon as ten are waiting (SQS's batch
maximum). Light load pays no added latency, heavy load fills batches. Calls
run on worker threads (boto3 is synchronous). Failed entries are retried with
exponential backoff and jitter; `send()` returns only once SQS accepted the
message, or raises EnqueueFailed.

The producer is bounded: a send that SQS has not accepted within its
deadline fails (the sender may resend; a late success is harmless, since
the worker's writes are idempotent), and past `max_backlog` unresolved
messages new sends are refused at once with QueueBusy instead of piling up.
"""

import asyncio
import logging
import random
from contextlib import contextmanager
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

SQS_BATCH_MAX = 10


class EnqueueFailed(Exception):
    """SQS did not accept the message (after retries, or within the deadline)."""


class QueueBusy(EnqueueFailed):
    """Refused at once: too many messages are already waiting for SQS."""


@dataclass
class _Pending:
    body: str
    future: asyncio.Future
    attempts: int = 0
    errors: list[str] = field(default_factory=list)


class SqsProducer:
    def __init__(
        self,
        *,
        client,
        queue_url: str,
        max_attempts: int = 5,
        max_in_flight: int = 4,
        base_backoff: float = 0.05,
        deadline_seconds: float = 10.0,
        max_backlog: int = 5000,
    ):
        self.client = client
        self.queue_url = queue_url
        self.max_attempts = max_attempts
        self.base_backoff = base_backoff
        self.deadline_seconds = deadline_seconds
        self.max_backlog = max_backlog
        self.unresolved = 0  # admitted messages not yet answered
        self._pending: list[_Pending] = []
        self._calls = 0  # batches sent or about to be (not those backing off)
        self._in_flight: set[asyncio.Task] = set()
        self._slots = asyncio.Semaphore(max_in_flight)

    @contextmanager
    def admission(self):
        """A place in the backlog for one message, or QueueBusy at once.

        Taken before the message is created, so a refused message never existed.
        """
        if self.unresolved >= self.max_backlog:
            raise QueueBusy(f"{self.unresolved} messages are waiting for SQS")
        self.unresolved += 1
        try:
            yield
        finally:
            self.unresolved -= 1

    async def send(self, body: str) -> None:
        future = asyncio.get_running_loop().create_future()
        pending = _Pending(body, future)
        self._pending.append(pending)
        if self._calls == 0 or len(self._pending) >= SQS_BATCH_MAX:
            self._flush()
        try:
            async with asyncio.timeout(self.deadline_seconds):
                await future
        except TimeoutError:
            if pending in self._pending:  # never sent: drop it, nothing else holds it
                self._pending.remove(pending)
            raise EnqueueFailed(f"not accepted within {self.deadline_seconds:g}s") from None

    async def close(self, grace_seconds: float | None = None) -> None:
        """Send what is pending and wait for every batch in flight (at most `grace_seconds`)."""
        try:
            async with asyncio.timeout(grace_seconds):
                while self._pending or self._in_flight:
                    self._flush()
                    # wait, not gather: a timeout must not cancel the batches in
                    # flight (SQS may take them yet), and the count below is theirs.
                    await asyncio.wait(list(self._in_flight))
        except TimeoutError:
            logger.error(
                "sqs producer closed with messages unsent",
                extra={"pending": len(self._pending), "in_flight": len(self._in_flight)},
            )

    def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:SQS_BATCH_MAX], self._pending[SQS_BATCH_MAX:]
            self._calls += 1
            task = asyncio.ensure_future(self._deliver(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _deliver(self, batch: list[_Pending]) -> None:
        async with self._slots:
            batches, first = [batch], True
            while batches:
                batch = batches.pop(0)
                if not first:
                    self._calls += 1
                first = False
                retry, split = await self._attempt(batch)
                if split:  # SQS refused the whole call: find the culprit, spare the others
                    batches.extend([pending] for pending in batch)
                elif retry:
                    delay = self.base_backoff * 2 ** (retry[0].attempts - 1)
                    await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311
                    batches.append(retry)

    async def _attempt(self, batch: list[_Pending]) -> tuple[list[_Pending], bool]:
        """One SendMessageBatch; returns (entries to try again, whether to send them singly)."""
        entries = [{"Id": str(i), "MessageBody": p.body} for i, p in enumerate(batch)]
        for pending in batch:
            pending.attempts += 1
        try:
            response = await asyncio.to_thread(
                self.client.send_message_batch, QueueUrl=self.queue_url, Entries=entries
            )
        except (BotoCoreError, ClientError) as exc:
            if len(batch) > 1 and _refused_request(exc):
                for pending in batch:
                    pending.attempts -= 1  # not their fault yet
                return batch, True
            failed = {str(i): str(exc) for i in range(len(batch))}
            retryable = set(failed) if not _refused_request(exc) else set()
        else:
            for ok in response.get("Successful", []):
                _resolve(batch[int(ok["Id"])].future)
            failed = {
                f["Id"]: f.get("Message", f.get("Code", "")) for f in response.get("Failed", [])
            }
            retryable = {f["Id"] for f in response.get("Failed", []) if not f.get("SenderFault")}
        finally:
            self._calls -= 1
            if self._calls == 0:
                self._flush()  # what gathered during the call leaves together
        retry = []
        for entry_id, reason in failed.items():
            pending = batch[int(entry_id)]
            pending.errors.append(reason)
            if entry_id in retryable and pending.attempts < self.max_attempts:
                retry.append(pending)
            else:
                logger.error(
                    "sqs enqueue failed",
                    extra={"attempts": pending.attempts, "reason": reason},
                )
                _reject(pending.future, EnqueueFailed(reason))
        return retry, False


THROTTLING = frozenset({"RequestThrottled", "ThrottlingException", "Throttling"})


def _refused_request(exc: Exception) -> bool:
    """SQS refused the request itself (4xx, not throttling): sending it again cannot help."""
    if not isinstance(exc, ClientError):
        return False
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
    return 400 <= status < 500 and exc.response.get("Error", {}).get("Code") not in THROTTLING


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _reject(future: asyncio.Future, exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
