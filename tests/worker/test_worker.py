"""The consume loop in-process against moto's server, with faults injected on the real clients."""

import threading
import time

import pytest

from chatsvc.aws import clients
from chatsvc.messaging.worker import QueueWorker, WorkerOptions
from tests.worker.conftest import (
    Producer,
    make_messages,
    queue_depth,
    scan_items,
    send_bodies,
    send_messages,
    set_queue_for_fast_redelivery,
)
from tests.worker.faults import CallCounter, DynamoFaults, Hooks, error

pytestmark = pytest.mark.integration


@pytest.fixture
def hooks():
    registry = Hooks()
    yield registry
    registry.remove_all()


def make_worker(aws, **overrides) -> QueueWorker:
    options = {
        "queue_url": aws.queue_url,
        "table": aws.table,
        "wait_seconds": 1,
        "linger": 0.2,
        "once": True,
        **overrides,
    }
    return QueueWorker(
        options=WorkerOptions(**options), sqs=clients.sqs(), dynamodb=clients.dynamodb()
    )


def stored_ids(aws) -> set[str]:
    return {item["message_id"]["S"] for item in scan_items(clients.dynamodb(), aws.table)}


def test_drains_the_queue_at_under_a_third_of_a_call_per_message(aws, hooks):
    messages = make_messages(
        150, rooms=["01HZZZZZZZZZZZZZZZZZZZZZZ0", "01HZZZZZZZZZZZZZZZZZZZZZZ1"]
    )
    send_messages(clients.sqs(), aws.queue_url, messages)
    counter = CallCounter(hooks, clients.sqs(), clients.dynamodb())

    stats = make_worker(aws).run()
    calls = dict(counter.calls)

    assert stored_ids(aws) == {m.id for m in messages}
    assert queue_depth(clients.sqs(), aws.queue_url) == (0, 0)
    assert (stats.received, stats.stored, stats.deleted, stats.failed) == (150, 150, 150, 0)
    # 15 full receives, 6 full BatchWriteItem, one BatchGetItem per batch of 50
    # (the messages' state items: changes persisted before them), 15 full
    # deletes, the final empty receive and the start-up GetQueueAttributes: 41
    # calls for 150 messages.
    assert calls == {
        "GetQueueAttributes": 1,
        "ReceiveMessage": 16,
        "BatchWriteItem": 6,
        "BatchGetItem": 3,
        "DeleteMessageBatch": 15,
    }


def test_lingering_keeps_a_steady_stream_within_the_cost_target(aws, hooks):
    """A stream that never builds a backlog still costs < 0.35 calls per message."""
    messages = make_messages(200)
    counter = CallCounter(hooks, clients.sqs(), clients.dynamodb())
    worker = make_worker(aws, once=False, linger=0.5, wait_seconds=2)
    thread = threading.Thread(target=worker.run)
    thread.start()
    producer = Producer(clients.sqs(), aws.queue_url, messages, per_tick=10, tick=0.1)
    producer.start()
    producer.join(timeout=60)
    deadline = time.monotonic() + 30
    while worker.stats.as_dict()["stored"] < 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    worker.stop()
    thread.join(timeout=10)

    calls = dict(counter.calls)
    calls.pop("SendMessageBatch")  # the producer's, not the worker's
    assert stored_ids(aws) == {m.id for m in messages}
    assert sum(calls.values()) / 200 <= 0.35, calls


def test_duplicate_deliveries_in_one_batch_store_one_item_and_delete_both(aws):
    twin, *others = make_messages(8)
    send_bodies(clients.sqs(), aws.queue_url, [twin.to_json(), *(m.to_json() for m in others)])
    send_bodies(clients.sqs(), aws.queue_url, [twin.to_json()])

    stats = make_worker(aws).run()

    items = scan_items(clients.dynamodb(), aws.table)
    assert sorted(item["message_id"]["S"] for item in items) == sorted(
        m.id for m in [twin, *others]
    )
    assert (stats.received, stats.duplicates, stats.stored, stats.deleted) == (9, 1, 8, 9)
    assert queue_depth(clients.sqs(), aws.queue_url) == (0, 0)


def test_unprocessed_items_are_retried_until_stored(aws, hooks):
    messages = make_messages(50)
    send_messages(clients.sqs(), aws.queue_url, messages)
    faults = DynamoFaults(hooks, clients.dynamodb())
    faults.partial = 4

    stats = make_worker(aws).run()

    assert faults.injected["partial"] == 4
    assert stats.retried >= 4
    assert stored_ids(aws) == {m.id for m in messages}
    assert (stats.stored, stats.failed, stats.deleted) == (50, 0, 50)
    assert queue_depth(clients.sqs(), aws.queue_url) == (0, 0)


def test_throttling_is_retried_with_backoff_until_stored(aws, hooks):
    messages = make_messages(30)
    send_messages(clients.sqs(), aws.queue_url, messages)
    faults = DynamoFaults(hooks, clients.dynamodb())
    faults.throttle = 5

    started = time.monotonic()
    stats = make_worker(aws).run()

    assert faults.injected["throttle"] == 5
    assert stats.retried >= 5
    assert stored_ids(aws) == {m.id for m in messages}
    assert queue_depth(clients.sqs(), aws.queue_url) == (0, 0)
    assert time.monotonic() - started < 10


def test_item_dynamodb_rejects_stays_queued_and_does_not_block_the_batch(aws, hooks):
    bad, *good = make_messages(12)
    send_messages(clients.sqs(), aws.queue_url, [*good[:6], bad, *good[6:]])
    faults = DynamoFaults(hooks, clients.dynamodb())
    faults.reject_batch = 1
    faults.reject_put_ids = {bad.id}

    stats = make_worker(aws).run()

    assert stored_ids(aws) == {m.id for m in good}
    assert (stats.stored, stats.failed, stats.deleted) == (11, 1, 11)
    assert queue_depth(clients.sqs(), aws.queue_url) == (0, 1)  # in flight, back later


def test_batch_not_stored_before_the_deadline_is_not_deleted(aws, hooks):
    messages = make_messages(20)
    send_messages(clients.sqs(), aws.queue_url, messages)
    faults = DynamoFaults(hooks, clients.dynamodb())
    faults.throttle = 10_000

    stats = make_worker(aws, write_timeout=0.5).run()

    assert stored_ids(aws) == set()
    assert (stats.received, stats.stored, stats.failed, stats.deleted) == (20, 0, 20, 0)
    assert queue_depth(clients.sqs(), aws.queue_url) == (0, 20)


def test_slow_batch_keeps_its_messages_invisible(aws, hooks):
    set_queue_for_fast_redelivery(clients.sqs(), aws.queue_url, aws.dlq_url, visibility=2)
    messages = make_messages(20)
    send_messages(clients.sqs(), aws.queue_url, messages)
    faults = DynamoFaults(hooks, clients.dynamodb())
    until = time.monotonic() + 3.5  # longer than the visibility timeout
    faults.throttle_while = lambda: time.monotonic() < until
    counter = CallCounter(hooks, clients.sqs())
    receive_counts = []
    hooks.on(
        clients.sqs(),
        "after-call.sqs.ReceiveMessage",
        lambda parsed, **kw: receive_counts.extend(
            int(m["Attributes"]["ApproximateReceiveCount"]) for m in parsed.get("Messages", [])
        ),
    )

    # A second poller would take any message whose visibility ran out.
    stats = make_worker(aws, pollers=2, wait_seconds=1).run()

    assert counter.calls["ChangeMessageVisibilityBatch"] >= 2
    assert stats.extended >= 20
    assert receive_counts == [1] * 20  # nobody received a message twice
    assert stored_ids(aws) == {m.id for m in messages}
    assert queue_depth(clients.sqs(), aws.queue_url) == (0, 0)


def test_stop_finishes_the_batch_in_flight_and_receives_no_more(aws, hooks):
    messages = make_messages(60)
    send_messages(clients.sqs(), aws.queue_url, messages)
    worker = make_worker(aws, once=False, batch_size=20, wait_seconds=1)
    faults = DynamoFaults(hooks, clients.dynamodb())
    faults.throttle = 3
    faults.on_throttle = worker.stop  # the stop arrives while the first batch is retried

    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("stats", worker.run()))
    thread.start()
    thread.join(timeout=20)

    assert not thread.is_alive()
    stats = result["stats"]
    assert (stats.batches, stats.received, stats.stored, stats.deleted) == (1, 20, 20, 20)
    stored = stored_ids(aws)
    assert len(stored) == 20
    assert queue_depth(clients.sqs(), aws.queue_url) == (40, 0)  # untouched, still visible


def test_receive_errors_are_survived(aws, hooks):
    messages = make_messages(10)
    send_messages(clients.sqs(), aws.queue_url, messages)
    failures = iter(range(2))

    def flaky_receive(**kwargs):
        if next(failures, None) is not None:
            return error("InternalError", status=500)
        return None

    hooks.on(clients.sqs(), "before-call.sqs.ReceiveMessage", flaky_receive)

    stats = make_worker(aws).run()

    assert stats.receive_errors == 2
    assert stored_ids(aws) == {m.id for m in messages}


def test_drain_mode_gives_up_on_a_queue_it_cannot_read(aws, hooks):
    hooks.on(
        clients.sqs(), "before-call.sqs.ReceiveMessage", lambda **kw: error("InternalError", 500)
    )

    worker = make_worker(aws)
    stats = worker.run()

    assert worker.gave_up
    assert stats.receive_errors == 5
