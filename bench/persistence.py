"""Persistence benchmark: producer -> SQS -> consume_queue worker -> DynamoDB.

Runs against moto's server (started here, over HTTP on loopback) and prints one
JSON line per scenario:

- `backlog`: a queue pre-filled with --backlog messages is drained; messages/s.
- `sustained`: a producer sends --rate messages/s for --duration seconds (in
  SendMessageBatch calls of 10, as the web tier does) while the worker runs with
  its production defaults; end-to-end persistence lag (item `created_at` minus
  message `ts`) p50/p99.

Both report the worker's AWS API calls per persisted message, by operation,
counted with botocore `before-call` hooks on the worker's clients (retries
inside botocore are not separate calls; none happen against the emulator).
The target is <= 0.35 calls per message. moto is far slower than AWS, so
messages/s measures the emulator more than the worker; calls per message and
the lag added by lingering carry over. moto's ReceiveMessage costs time in
proportion to the queue length (~0.5-1 s per call with 1,000 messages queued),
so a sustained rate the machine cannot keep up with builds a backlog that the
emulator never recovers from; keep --rate modest on a shared machine.

    .venv/bin/python bench/persistence.py [--rate 50 --duration 20 --backlog 1000 --pollers 1]
"""

import argparse
import json
import multiprocessing
import os
import socket
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_moto(port: int, stop) -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    stop.wait()
    server.stop()


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"moto did not start on port {port}")


def setup_django(endpoint: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsvc.settings")
    os.environ.setdefault("DEBUG", "true")
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # one line per batch would drown the output
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    os.environ["AWS_REGION"] = "us-east-1"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.pop("AWS_PROFILE", None)
    import django

    django.setup()


def worker_client(service: str):
    import boto3
    from django.conf import settings

    from chatsvc.aws.clients import CLIENT_CONFIG

    return boto3.session.Session().client(
        service,
        region_name=settings.AWS_REGION,
        endpoint_url=settings.AWS_ENDPOINT_URL,
        config=CLIENT_CONFIG,
    )


class CallCounter:
    def __init__(self):
        self.calls: Counter = Counter()
        self.seconds: Counter = Counter()
        self._lock = threading.Lock()

    def watch(self, *clients) -> None:
        for client in clients:
            client.meta.events.register("before-call", self._count)
            client.meta.events.register("after-call", self._time)

    def _count(self, model, context, **kwargs):
        context["bench_started"] = time.monotonic()
        with self._lock:
            self.calls[model.name] += 1

    def _time(self, model, context, **kwargs):
        elapsed = time.monotonic() - context.get("bench_started", time.monotonic())
        with self._lock:
            self.seconds[model.name] += elapsed

    def mean_ms(self) -> dict:
        with self._lock:
            return {
                name: round(self.seconds[name] / count * 1000, 1)
                for name, count in sorted(self.calls.items())
            }

    def snapshot(self) -> Counter:
        with self._lock:
            return Counter(self.calls)


def make_bodies(count: int, rooms: list[str]) -> list[str]:
    from chatsvc.core.ulid import new_ulid
    from chatsvc.messaging.queue_message import QueueMessage, utc_timestamp

    bodies = []
    for index in range(count):
        bodies.append(
            QueueMessage(
                id=new_ulid(),
                tenant_id="01HBENCHTENANT0000000000000",
                connection_id=rooms[index % len(rooms)],
                sender_id=f"user-{index % 50}",
                sender_name=f"Learner {index % 50}",
                body="A typical chat line of about a hundred characters, give or take a few words.",
                ts=utc_timestamp(),
            ).to_json()
        )
    return bodies


def send_batch(sqs, queue_url: str, bodies: list[str]) -> None:
    for start in range(0, len(bodies), 10):
        chunk = bodies[start : start + 10]
        sqs.send_message_batch(
            QueueUrl=queue_url,
            Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)],
        )


def stored_count(dynamodb, table: str) -> int:
    count, start = 0, None
    while True:
        params = {"TableName": table, "Select": "COUNT"}
        if start:
            params["ExclusiveStartKey"] = start
        response = dynamodb.scan(**params)
        count += response["Count"]
        start = response.get("LastEvaluatedKey")
        if not start:
            return count


def lags_ms(dynamodb, table: str) -> list[float]:
    lags, start = [], None
    while True:
        params = {"TableName": table, "ProjectionExpression": "ts, created_at"}
        if start:
            params["ExclusiveStartKey"] = start
        response = dynamodb.scan(**params)
        for item in response["Items"]:
            sent = datetime.fromisoformat(item["ts"]["S"].replace("Z", "+00:00"))
            stored = datetime.fromisoformat(item["created_at"]["S"])
            lags.append((stored - sent).total_seconds() * 1000)
        start = response.get("LastEvaluatedKey")
        if not start:
            return sorted(lags)


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    index = min(len(values) - 1, max(0, round(fraction * (len(values) - 1))))
    return round(values[index], 1)


def provision(name: str) -> tuple[str, str]:
    from chatsvc.aws import clients
    from chatsvc.aws import provision as shapes

    queue_url, _ = shapes.ensure_queue(clients.sqs(), name)
    shapes.ensure_table(clients.dynamodb(), name)
    return queue_url, name


def start_worker(queue_url: str, table: str, *, counter: "CallCounter", **options):
    from chatsvc.messaging.worker import QueueWorker, WorkerOptions

    # The worker gets clients of its own: only its calls are counted.
    sqs, dynamodb = worker_client("sqs"), worker_client("dynamodb")
    counter.watch(sqs, dynamodb)
    worker = QueueWorker(
        options=WorkerOptions(queue_url=queue_url, table=table, **options),
        sqs=sqs,
        dynamodb=dynamodb,
    )
    result: dict = {}
    thread = threading.Thread(target=lambda: result.setdefault("stats", worker.run()))
    thread.start()
    return worker, thread, result


def report(scenario: str, *, persisted: int, elapsed: float, counter, extra: dict) -> None:
    calls = counter.snapshot()
    total = sum(calls.values())
    print(
        json.dumps(
            {
                "scenario": scenario,
                "persisted": persisted,
                "seconds": round(elapsed, 2),
                "messages_per_s": round(persisted / elapsed, 1) if elapsed else None,
                "calls": dict(sorted(calls.items())),
                "calls_per_message": round(total / persisted, 4) if persisted else None,
                "calls_per_message_by_operation": {
                    name: round(count / persisted, 4) for name, count in sorted(calls.items())
                },
                "mean_call_ms": counter.mean_ms(),
                "target_calls_per_message": 0.35,
                "within_target": bool(persisted) and total / persisted <= 0.35,
                **extra,
            }
        ),
        flush=True,
    )


def backlog(args, producer_sqs) -> None:
    from chatsvc.aws import clients

    queue_url, table = provision(f"bench-backlog-{os.getpid()}")
    rooms = [f"01HBENCHR00M{index:014d}" for index in range(20)]
    send_batch(producer_sqs, queue_url, make_bodies(args.backlog, rooms))
    counter = CallCounter()
    started = time.monotonic()
    _, thread, result = start_worker(
        queue_url,
        table,
        counter=counter,
        pollers=args.pollers,
        linger=args.linger_ms / 1000,
        once=True,
        wait_seconds=1,
    )
    thread.join()
    elapsed = time.monotonic() - started
    persisted = stored_count(clients.dynamodb(), table)
    report(
        "backlog",
        persisted=persisted,
        elapsed=elapsed,
        counter=counter,
        extra={"pollers": args.pollers, "stats": result["stats"].as_dict()},
    )


def sustained(args, producer_sqs) -> None:
    from chatsvc.aws import clients

    queue_url, table = provision(f"bench-sustained-{os.getpid()}")
    rooms = [f"01HBENCHR00M{index:014d}" for index in range(20)]
    total = int(args.rate * args.duration)
    counter = CallCounter()
    worker, thread, result = start_worker(
        queue_url, table, counter=counter, pollers=args.pollers, linger=args.linger_ms / 1000
    )
    started = time.monotonic()
    interval = 10 / args.rate  # one SendMessageBatch of 10 per interval
    sent = 0
    while sent < total:
        due = started + (sent / 10) * interval
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        # Fresh ts at send time, so lag measures queue + worker, not the backlog.
        send_batch(producer_sqs, queue_url, make_bodies(min(10, total - sent), rooms))
        sent += 10
    produced = time.monotonic() - started
    deadline = time.monotonic() + 120
    while stored_count(clients.dynamodb(), table) < total and time.monotonic() < deadline:
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    worker.stop()
    thread.join()
    lags = lags_ms(clients.dynamodb(), table)
    report(
        "sustained",
        persisted=len(lags),
        elapsed=elapsed,
        counter=counter,
        extra={
            "offered_rate_per_s": args.rate,
            "achieved_send_rate_per_s": round(total / produced, 1),
            "pollers": args.pollers,
            "linger_ms": args.linger_ms,
            "lag_ms_p50": percentile(lags, 0.50),
            "lag_ms_p99": percentile(lags, 0.99),
            "lag_ms_max": percentile(lags, 1.0),
            "stats": result["stats"].as_dict(),
        },
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backlog", type=int, default=1000, help="messages to drain (0: skip)")
    parser.add_argument("--rate", type=float, default=50, help="sustained messages/s (0: skip)")
    parser.add_argument("--duration", type=float, default=20, help="sustained seconds")
    parser.add_argument("--pollers", type=int, default=1)
    parser.add_argument("--linger-ms", type=int, default=500)
    args = parser.parse_args()

    # The emulator gets a process of its own so that it does not compete with
    # the worker for this interpreter's GIL.
    port = free_port()
    stop = multiprocessing.Event()
    server = multiprocessing.Process(target=serve_moto, args=(port, stop), daemon=True)
    server.start()
    wait_for_port(port)
    try:
        setup_django(f"http://127.0.0.1:{port}")
        producer_sqs = worker_client("sqs")
        if args.backlog:
            backlog(args, producer_sqs)
        if args.rate:
            sustained(args, producer_sqs)
    finally:
        stop.set()
        server.join(timeout=10)


if __name__ == "__main__":
    main()
