"""Fault injection and call counting through botocore event hooks on the real clients.

Nothing in the worker is mocked: requests still go to moto's server over HTTP;
the hooks only shorten a request (partial writes), answer it with an AWS error
before it leaves the process (throttling), or count it.
"""

import itertools
import threading
from collections import Counter
from collections.abc import Callable

_ids = itertools.count()


class _ErrorResponse:
    def __init__(self, status: int):
        self.status_code = status
        self.headers: dict = {}
        self.content = b""


def error(code: str, status: int = 400, message: str = "injected by the test"):
    return _ErrorResponse(status), {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }


class Hooks:
    """Registers handlers on clients and removes them again (the clients are cached)."""

    def __init__(self):
        self._registered: list[tuple] = []

    def on(self, client, event: str, handler: Callable) -> None:
        unique_id = f"test-hook-{next(_ids)}"
        client.meta.events.register(event, handler, unique_id=unique_id)
        self._registered.append((client, event, unique_id))

    def remove_all(self) -> None:
        for client, event, unique_id in self._registered:
            client.meta.events.unregister(event, unique_id=unique_id)
        self._registered.clear()


class CallCounter:
    """Counts API calls per operation (`before-call` fires once per call, not per retry)."""

    def __init__(self, hooks: Hooks, *clients):
        self.calls: Counter = Counter()
        self._lock = threading.Lock()
        for client in clients:
            hooks.on(client, "before-call", self._count)

    def _count(self, model, **kwargs):
        with self._lock:
            self.calls[model.name] += 1

    def total(self, *operations: str) -> int:
        return (
            sum(self.calls[name] for name in operations) if operations else sum(self.calls.values())
        )


class DynamoFaults:
    """BatchWriteItem misbehaving like a throttled table.

    - `partial`: the next N calls store only the first half of their items and
      return the rest as UnprocessedItems (the dropped half never reaches moto).
    - `throttle`: the next N calls fail with ProvisionedThroughputExceededException.
    - `throttle_while`: a predicate; calls fail with throttling while it is true.
    - `reject_batch`: the next N calls fail with ValidationException.
    - `reject_put_ids`: PutItem of these message ids fails with ValidationException.
    """

    def __init__(self, hooks: Hooks, client):
        self.partial = 0
        self.throttle = 0
        self.throttle_while: Callable[[], bool] | None = None
        self.reject_batch = 0
        self.reject_put_ids: set[str] = set()
        self.on_throttle: Callable[[], None] | None = None
        self.injected: Counter = Counter()
        self._lock = threading.Lock()
        hooks.on(client, "before-parameter-build.dynamodb.BatchWriteItem", self._shorten)
        hooks.on(client, "after-call.dynamodb.BatchWriteItem", self._report_unprocessed)
        hooks.on(client, "before-call.dynamodb.BatchWriteItem", self._fail_batch)
        hooks.on(client, "before-call.dynamodb.PutItem", self._fail_put)

    def _take(self, name: str) -> bool:
        with self._lock:
            if getattr(self, name) > 0:
                setattr(self, name, getattr(self, name) - 1)
                self.injected[name] += 1
                return True
            return False

    def _shorten(self, params, context, **kwargs):
        (table, requests), *_ = params["RequestItems"].items()
        if len(requests) < 2 or not self._take("partial"):
            return
        keep = len(requests) // 2
        params["RequestItems"] = {table: requests[:keep]}
        context["test_unprocessed"] = {table: requests[keep:]}

    def _report_unprocessed(self, parsed, context, **kwargs):
        if "test_unprocessed" in context:
            parsed["UnprocessedItems"] = context["test_unprocessed"]

    def _fail_batch(self, **kwargs):
        if self._take("reject_batch"):
            return error("ValidationException")
        throttled = self._take("throttle")
        if not throttled and self.throttle_while is not None and self.throttle_while():
            with self._lock:
                self.injected["throttle_while"] += 1
            throttled = True
        if throttled:
            if self.on_throttle is not None:
                self.on_throttle()
            return error("ProvisionedThroughputExceededException")
        return None

    def _fail_put(self, params, **kwargs):
        body = params["body"]
        body = body.decode() if isinstance(body, bytes) else body
        if any(message_id in body for message_id in self.reject_put_ids):
            with self._lock:
                self.injected["reject_put"] += 1
            return error("ValidationException", message="Item size has exceeded the maximum")
        return None
