"""The batching SQS producer against moto's server over HTTP."""

import asyncio
import json
import time

import pytest
from botocore.exceptions import ClientError

from chatsvc.aws import clients
from chatsvc.messaging.producer import EnqueueFailed, SqsProducer


class CountingClient:
    """The real SQS client, counting SendMessageBatch calls and batch sizes;
    `fail_first` entries of the first calls come back as Failed, as SQS reports
    partial failures."""

    def __init__(self, *, fail_first=0, sender_fault=False):
        self.real = clients.sqs()
        self.sizes = []
        self.fail_first = fail_first
        self.sender_fault = sender_fault

    def send_message_batch(self, *, QueueUrl, Entries):
        self.sizes.append(len(Entries))
        failing, Entries = Entries[: self.fail_first], Entries[self.fail_first :]
        self.fail_first = 0
        response = (
            self.real.send_message_batch(QueueUrl=QueueUrl, Entries=Entries) if Entries else {}
        )
        failed = [
            {
                "Id": e["Id"],
                "SenderFault": self.sender_fault,
                "Code": "InternalError",
                "Message": "injected",
            }
            for e in failing
        ]
        return {"Successful": response.get("Successful", []), "Failed": failed}


def queued(aws):
    bodies = []
    while (
        batch := clients.sqs()
        .receive_message(QueueUrl=aws.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        .get("Messages")
    ):
        bodies += [m["Body"] for m in batch]
    return sorted(bodies)


async def test_a_lone_message_goes_out_at_once(aws):
    client = CountingClient()
    producer = SqsProducer(client=client, queue_url=aws.queue_url)
    await asyncio.wait_for(producer.send("solo"), 5)
    assert client.sizes == [1]
    assert queued(aws) == ["solo"]


async def test_concurrent_messages_share_batches(aws):
    client = CountingClient()
    producer = SqsProducer(client=client, queue_url=aws.queue_url)
    bodies = [json.dumps({"n": n}) for n in range(45)]
    await asyncio.gather(*(producer.send(body) for body in bodies))
    assert sum(client.sizes) == 45 and max(client.sizes) <= 10
    assert len(client.sizes) <= 6  # one at once, then full batches
    assert queued(aws) == sorted(bodies)


async def test_failed_entries_are_retried_until_accepted(aws):
    client = CountingClient(fail_first=3)
    producer = SqsProducer(client=client, queue_url=aws.queue_url, base_backoff=0.01)
    await asyncio.gather(*(producer.send(f"m{n}") for n in range(5)))
    assert queued(aws) == [f"m{n}" for n in range(5)]
    assert len(client.sizes) >= 2


async def test_sender_faults_fail_at_once_and_spare_the_others(aws):
    client = CountingClient(fail_first=1, sender_fault=True)
    producer = SqsProducer(client=client, queue_url=aws.queue_url)
    bad, good = await asyncio.gather(
        producer.send("bad"), producer.send("good"), return_exceptions=True
    )
    assert isinstance(bad, EnqueueFailed) and good is None
    assert queued(aws) == ["good"]


async def test_an_unreachable_queue_fails_after_the_attempts(aws):
    producer = SqsProducer(
        client=clients.sqs(), queue_url=aws.queue_url + "-gone", max_attempts=3, base_backoff=0.01
    )
    with pytest.raises(EnqueueFailed):
        await asyncio.wait_for(producer.send("x"), 10)


async def test_close_flushes_what_is_pending(aws):
    producer = SqsProducer(client=clients.sqs(), queue_url=aws.queue_url)
    sends = [asyncio.ensure_future(producer.send(f"p{n}")) for n in range(12)]
    await asyncio.sleep(0)
    await producer.close()
    await asyncio.gather(*sends)
    assert len(queued(aws)) == 12


class RefusingClient:
    """SQS refusing a whole SendMessageBatch call (HTTP 400) when one entry is invalid."""

    def __init__(self):
        self.real = clients.sqs()

    def send_message_batch(self, *, QueueUrl, Entries):
        if any("poison" in entry["MessageBody"] for entry in Entries):
            raise ClientError(
                {
                    "Error": {"Code": "InvalidMessageContents", "Message": "invalid characters"},
                    "ResponseMetadata": {"HTTPStatusCode": 400},
                },
                "SendMessageBatch",
            )
        return self.real.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)


async def test_a_refused_batch_fails_only_the_entry_sqs_refuses(aws):
    producer = SqsProducer(client=RefusingClient(), queue_url=aws.queue_url)
    first = asyncio.ensure_future(producer.send("first"))  # goes out alone, at once
    bodies = ["a", "b", "poison", "c", "d"]
    results = await asyncio.gather(*(producer.send(b) for b in bodies), return_exceptions=True)
    await first
    assert [type(r).__name__ for r in results] == [
        "NoneType",
        "NoneType",
        "EnqueueFailed",
        "NoneType",
        "NoneType",
    ]
    assert queued(aws) == ["a", "b", "c", "d", "first"]


class SlowClient:
    """The real SQS client, answering after `delay` seconds (a slow region, a busy emulator)."""

    def __init__(self, delay):
        self.real = clients.sqs()
        self.delay = delay

    def send_message_batch(self, *, QueueUrl, Entries):
        time.sleep(self.delay)  # runs in the producer's worker thread
        return self.real.send_message_batch(QueueUrl=QueueUrl, Entries=Entries)


async def test_a_close_that_runs_out_of_grace_leaves_the_batch_in_flight_going(aws, caplog):
    producer = SqsProducer(client=SlowClient(0.5), queue_url=aws.queue_url)
    send = asyncio.ensure_future(producer.send("late"))
    await asyncio.sleep(0)
    await producer.close(grace_seconds=0.1)
    unsent = "sqs producer closed with messages unsent"
    [record] = [r for r in caplog.records if r.message == unsent]
    assert record.in_flight == 1  # what was really unsent, not what was left after a cancel
    await asyncio.wait_for(send, 5)  # the batch was not cancelled: SQS took it
    assert queued(aws) == ["late"]
