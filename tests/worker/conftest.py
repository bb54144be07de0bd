"""Helpers for the worker tests: a producer like the web tier's, table readers, subprocesses."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chatsvc.core.ulid import new_ulid
from chatsvc.messaging.queue_message import QueueMessage, utc_timestamp

REPO = Path(__file__).resolve().parents[2]


def make_messages(count: int, *, rooms: list[str] | None = None, **overrides) -> list[QueueMessage]:
    rooms = rooms or [new_ulid()]
    messages = []
    for index in range(count):
        messages.append(
            QueueMessage(
                id=new_ulid(),
                tenant_id="tenant-1",
                connection_id=rooms[index % len(rooms)],
                sender_id=f"user-{index % 7}",
                sender_name=f"User {index % 7}",
                body=f"message {index} ✓",
                ts=utc_timestamp(),
                **overrides,
            )
        )
    return messages


def send_bodies(sqs, queue_url: str, bodies: list[str]) -> None:
    """SendMessageBatch, 10 at a time, as the web tier's producer does."""
    for start in range(0, len(bodies), 10):
        chunk = bodies[start : start + 10]
        response = sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)],
        )
        assert not response.get("Failed"), response["Failed"]


def send_messages(sqs, queue_url: str, messages: list[QueueMessage]) -> None:
    send_bodies(sqs, queue_url, [message.to_json() for message in messages])


def scan_items(dynamodb, table: str) -> list[dict]:
    items, start = [], None
    while True:
        params = {"TableName": table, "ConsistentRead": True}
        if start:
            params["ExclusiveStartKey"] = start
        response = dynamodb.scan(**params)
        items.extend(response["Items"])
        start = response.get("LastEvaluatedKey")
        if not start:
            return items


def room_ids(dynamodb, table: str, room: str) -> list[str]:
    """Message ids of a room in sort-key (ascending) order."""
    ids, start = [], None
    while True:
        params = {
            "TableName": table,
            "KeyConditionExpression": "connection_id = :c",
            "ExpressionAttributeValues": {":c": {"S": room}},
            "ConsistentRead": True,
        }
        if start:
            params["ExclusiveStartKey"] = start
        response = dynamodb.query(**params)
        ids.extend(item["message_id"]["S"] for item in response["Items"])
        start = response.get("LastEvaluatedKey")
        if not start:
            return ids


def queue_depth(sqs, queue_url: str) -> tuple[int, int]:
    """(visible, in flight) messages of a queue."""
    attributes = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attributes["ApproximateNumberOfMessages"]),
        int(attributes["ApproximateNumberOfMessagesNotVisible"]),
    )


def drain_bodies(sqs, queue_url: str) -> list[str]:
    """Receive (and delete) whatever is visible in a queue."""
    bodies = []
    while True:
        response = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        messages = response.get("Messages", [])
        if not messages:
            return bodies
        bodies.extend(message["Body"] for message in messages)
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )


def set_queue_for_fast_redelivery(
    sqs, queue_url: str, dlq_url: str, *, visibility: int, max_receives: int | None = None
):
    attributes = {"VisibilityTimeout": str(visibility)}
    if max_receives is not None:
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives}
        )
    sqs.set_queue_attributes(QueueUrl=queue_url, Attributes=attributes)


def wait_until(predicate, *, timeout: float, interval: float = 0.2, message: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s: {message}")


class Producer(threading.Thread):
    """Streams messages onto the queue at a steady pace, like a busy web tier."""

    def __init__(
        self, sqs, queue_url: str, messages: list[QueueMessage], *, per_tick=10, tick=0.05
    ):
        super().__init__(daemon=True)
        self.sqs, self.queue_url, self.messages = sqs, queue_url, messages
        self.per_tick, self.tick = per_tick, tick
        self.sent = 0

    def run(self):
        for start in range(0, len(self.messages), self.per_tick):
            send_messages(self.sqs, self.queue_url, self.messages[start : start + self.per_tick])
            self.sent = min(len(self.messages), start + self.per_tick)
            time.sleep(self.tick)


class WorkerProcess:
    """`python manage.py consume_queue` as a real subprocess with JSON logs."""

    def __init__(self, aws, log_path: Path, *args: str):
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "chatsvc.settings",
            "DEBUG": "true",
            "LOG_FORMAT": "json",
            "LOG_LEVEL": "INFO",
            "AWS_ENDPOINT_URL": aws.endpoint,
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "CHAT_QUEUE_URL": aws.queue_url,
            "CHAT_TABLE_NAME": aws.table,
        }
        env.pop("AWS_PROFILE", None)
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "consume_queue", *args],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def log_lines(self) -> list[dict]:
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"message": raw})
        return lines

    def batches(self) -> list[dict]:
        return [line for line in self.log_lines() if line.get("message", "").startswith("batch ")]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def worker_process(tmp_path):
    """Start consume_queue subprocesses; any still running at teardown are killed."""
    started: list[WorkerProcess] = []

    def start(aws, *args: str) -> WorkerProcess:
        process = WorkerProcess(aws, tmp_path / f"worker-{len(started)}.log", *args)
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()
