"""Batching SQS producer: many `send()` calls become few SendMessageBatch calls.

Batches size themselves to the load, with no fixed linger: when no call is
running a message goes out at once; while one runs, new messages gather and
leave together when it returns, or as soon as ten are waiting (SQS's batch
maximum). Light load pays no added latency, heavy load fills batches. Calls
run on worker threads (boto3 is synchronous). Failed entries are retried with
exponential backoff and jitter; `send()` returns only once SQS accepted the
message, or raises EnqueueFailed.
"""

import asyncio
import logging
import random
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

SQS_BATCH_MAX = 10


class EnqueueFailed(Exception):
    pass


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
    ):
        self.client = client
        self.queue_url = queue_url
        self.max_attempts = max_attempts
        self.base_backoff = base_backoff
        self._pending: list[_Pending] = []
        self._calls = 0  # batches sent or about to be (not those backing off)
        self._in_flight: set[asyncio.Task] = set()
        self._slots = asyncio.Semaphore(max_in_flight)

    async def send(self, body: str) -> None:
        future = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(body, future))
        if self._calls == 0 or len(self._pending) >= SQS_BATCH_MAX:
            self._flush()
        await future

    async def close(self) -> None:
        """Send what is pending and wait for every batch in flight."""
        while self._pending or self._in_flight:
            self._flush()
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:SQS_BATCH_MAX], self._pending[SQS_BATCH_MAX:]
            self._calls += 1
            task = asyncio.ensure_future(self._deliver(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _deliver(self, batch: list[_Pending]) -> None:
        async with self._slots:
            while batch:
                batch = await self._attempt(batch)
                if batch:
                    delay = self.base_backoff * 2 ** (batch[0].attempts - 1)
                    await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311
                    self._calls += 1

    async def _attempt(self, batch: list[_Pending]) -> list[_Pending]:
        """One SendMessageBatch; returns the entries to try again."""
        entries = [{"Id": str(i), "MessageBody": p.body} for i, p in enumerate(batch)]
        for pending in batch:
            pending.attempts += 1
        try:
            response = await asyncio.to_thread(
                self.client.send_message_batch, QueueUrl=self.queue_url, Entries=entries
            )
        except (BotoCoreError, ClientError) as exc:
            failed = {str(i): str(exc) for i in range(len(batch))}
            retryable = set(failed)
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
        return retry


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _reject(future: asyncio.Future, exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
