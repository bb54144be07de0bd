"""`manage.py consume_queue` as a real process against moto's server over HTTP.

Messages go onto the queue with SendMessageBatch, as the web tier sends them.
"""

import json
import signal
import time

import pytest

from chatsvc.aws import clients
from chatsvc.core.ulid import new_ulid
from chatsvc.messaging.dynamo import fetch_history
from tests.worker.conftest import (
    Producer,
    drain_bodies,
    make_messages,
    queue_depth,
    room_ids,
    scan_items,
    send_bodies,
    send_messages,
    set_queue_for_fast_redelivery,
    wait_until,
)

pytestmark = pytest.mark.integration


def item_count(aws) -> int:
    return clients.dynamodb().scan(TableName=aws.table, Select="COUNT", ConsistentRead=True)[
        "Count"
    ]


def assert_stored_exactly(aws, messages) -> None:
    """Every message is in the table once, unaltered, and nothing else is."""
    items = scan_items(clients.dynamodb(), aws.table)
    assert len(items) == len(messages)
    by_id = {item["message_id"]["S"]: item for item in items}
    for message in messages:
        item = by_id[message.id]
        assert item["connection_id"]["S"] == message.connection_id
        assert item["body"]["S"] == message.body
        assert item["sender_name"]["S"] == message.sender_name
        assert item["ts"]["S"] == message.ts


def test_stream_is_stored_once_in_id_order_and_paged_back_as_history(aws, worker_process):
    rooms = [new_ulid() for _ in range(3)]
    messages = make_messages(200, rooms=rooms)
    send_messages(clients.sqs(), aws.queue_url, messages)

    worker = worker_process(aws, "--once", "--pollers", "2", "--wait-seconds", "1")
    assert worker.wait(timeout=60) == 0

    assert_stored_exactly(aws, messages)
    assert queue_depth(clients.sqs(), aws.queue_url) == (0, 0)
    for room in rooms:
        sent = [m.id for m in messages if m.connection_id == room]
        assert room_ids(clients.dynamodb(), aws.table, room) == sent
        paged, before = [], None
        while True:
            page, before = fetch_history(connection_id=room, before=before, limit=37)
            paged.extend(message["id"] for message in page)
            if before is None:
                break
        assert paged == sent[::-1]
    batches = worker.batches()
    # At least once: two pollers may both get a message (moto races like SQS may
    # deliver twice); the table above still holds it once.
    assert sum(line["stored"] for line in batches) >= 200
    assert {"received", "stored", "retried", "failed", "oldest_age_ms"} <= set(batches[0])


def test_sigkill_mid_stream_then_restart_stores_every_message_once(aws, worker_process):
    set_queue_for_fast_redelivery(clients.sqs(), aws.queue_url, aws.dlq_url, visibility=2)
    messages = make_messages(300, rooms=[new_ulid(), new_ulid()])
    args = ("--wait-seconds", "1", "--linger-ms", "300")
    first = worker_process(aws, *args)
    producer = Producer(clients.sqs(), aws.queue_url, messages, per_tick=10, tick=0.03)
    producer.start()

    wait_until(lambda: first.batches(), timeout=30, message="first worker stores nothing")
    # Kill while the worker holds received messages (in flight, not yet deleted).
    wait_until(lambda: queue_depth(clients.sqs(), aws.queue_url)[1] > 0, timeout=10, interval=0.01)
    first.signal(signal.SIGKILL)
    assert first.wait(timeout=10) == -signal.SIGKILL
    stored_before_restart = item_count(aws)
    assert 0 < stored_before_restart < len(messages)

    second = worker_process(aws, *args)
    producer.join(timeout=60)
    wait_until(lambda: item_count(aws) == len(messages), timeout=60, message="not all stored")
    wait_until(
        lambda: queue_depth(clients.sqs(), aws.queue_url) == (0, 0), timeout=30, message="queue"
    )
    second.signal(signal.SIGTERM)
    assert second.wait(timeout=20) == 0

    assert_stored_exactly(aws, messages)
    assert queue_depth(clients.sqs(), aws.dlq_url) == (0, 0)
    # The messages the killed worker held were delivered again, and stored once.
    assert max(line["max_receive_count"] for line in second.batches()) >= 2


def test_moto_moves_a_message_to_the_dlq_after_max_receives(aws):
    """The emulator honours the redrive policy (the next test depends on it)."""
    sqs = clients.sqs()
    set_queue_for_fast_redelivery(sqs, aws.queue_url, aws.dlq_url, visibility=1, max_receives=2)
    send_bodies(sqs, aws.queue_url, ["poison"])
    receives = 0
    for _ in range(4):
        receives += len(
            sqs.receive_message(QueueUrl=aws.queue_url, WaitTimeSeconds=2).get("Messages", [])
        )
        if queue_depth(sqs, aws.dlq_url)[0]:
            break
    assert receives == 2
    assert drain_bodies(sqs, aws.dlq_url) == ["poison"]


def test_poison_messages_end_in_the_dlq_and_the_good_ones_are_stored(aws, worker_process):
    sqs = clients.sqs()
    set_queue_for_fast_redelivery(sqs, aws.queue_url, aws.dlq_url, visibility=1, max_receives=2)
    good = make_messages(10)
    wrong_version = json.dumps({**json.loads(good[0].to_json()), "v": 99})
    bad_room = json.dumps({**json.loads(good[0].to_json()), "connection_id": ""})
    poison = ["{not json", wrong_version, bad_room]
    bodies = [m.to_json() for m in good[:5]] + poison + [m.to_json() for m in good[5:]]
    send_bodies(sqs, aws.queue_url, bodies)

    worker = worker_process(aws, "--wait-seconds", "1", "--linger-ms", "100")
    wait_until(lambda: item_count(aws) == 10, timeout=30, message="good messages not stored")
    wait_until(lambda: queue_depth(sqs, aws.dlq_url)[0] == 3, timeout=30, message="DLQ")
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0

    assert_stored_exactly(aws, good)
    assert sorted(drain_bodies(sqs, aws.dlq_url)) == sorted(poison)
    assert queue_depth(sqs, aws.queue_url) == (0, 0)
    warnings = [
        line for line in worker.log_lines() if line.get("message", "").startswith("invalid")
    ]
    assert len(warnings) >= 3
    assert all("not json" not in json.dumps(line) for line in warnings)  # no bodies in logs


def test_sigterm_during_a_batch_finishes_it_and_exits_zero(aws, worker_process):
    messages = make_messages(300, rooms=[new_ulid()])
    worker = worker_process(
        aws, "--pollers", "2", "--wait-seconds", "2", "--linger-ms", "1000", "--write-timeout", "5"
    )
    producer = Producer(clients.sqs(), aws.queue_url, messages, per_tick=10, tick=0.02)
    producer.start()
    wait_until(lambda: worker.batches(), timeout=30, message="worker stores nothing")

    worker.signal(signal.SIGTERM)
    signalled = time.monotonic()
    returncode = worker.wait(timeout=30)
    elapsed = time.monotonic() - signalled
    producer.join(timeout=60)

    # Bound: --wait-seconds + --linger-ms + --write-timeout, plus slack for a shared CPU.
    assert returncode == 0
    assert elapsed < 2 + 1 + 5 + 2, elapsed
    lines = worker.log_lines()
    stopping = next(i for i, line in enumerate(lines) if line.get("message") == "stopping")
    finished = [line for line in lines[stopping:] if line.get("message", "").startswith("batch ")]
    assert finished and sum(line["received"] for line in finished) > 0  # in flight at SIGTERM
    assert lines[-1]["message"] == "worker stopped"

    # Nothing half-done: every message is either stored (and gone from the
    # queue) or still in the queue (and not stored); none is held in flight.
    sqs = clients.sqs()
    assert queue_depth(sqs, aws.queue_url)[1] == 0
    stored = {item["message_id"]["S"] for item in scan_items(clients.dynamodb(), aws.table)}
    queued = [json.loads(body)["id"] for body in drain_bodies(sqs, aws.queue_url)]
    assert len(queued) == len(set(queued))
    assert stored.isdisjoint(queued)
    assert stored | set(queued) == {m.id for m in messages}
    assert stored


def test_bad_configuration_fails_fast_with_a_clear_error(aws, worker_process):
    aws.queue_url = aws.queue_url.rsplit("/", 1)[0] + "/no-such-queue"
    worker = worker_process(aws, "--once")
    assert worker.wait(timeout=30) == 1
    assert "cannot read queue" in worker.log_path.read_text()


def test_idle_worker_stops_within_the_long_poll_and_a_second_signal_is_immediate(
    aws, worker_process
):
    patient = worker_process(aws, "--wait-seconds", "3")
    impatient = worker_process(aws, "--wait-seconds", "20")
    for worker in (patient, impatient):
        wait_until(
            lambda w=worker: any(line.get("message") == "worker started" for line in w.log_lines()),
            timeout=30,
            message="worker did not start",
        )
    time.sleep(0.5)  # both are inside a long poll now
    signalled = time.monotonic()
    patient.signal(signal.SIGTERM)
    impatient.signal(signal.SIGINT)
    time.sleep(0.3)
    impatient.signal(signal.SIGINT)
    assert impatient.wait(timeout=5) == 128 + signal.SIGINT
    assert patient.wait(timeout=10) == 0
    assert time.monotonic() - signalled < 3 + 2
