"""Webhook tests: real PostgreSQL (DATABASE_URL), real HTTP receivers on loopback."""

import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chatsvc.core.ulid import new_ulid
from chatsvc.webhooks import outbox
from chatsvc.webhooks.sender import Sender
from tests import factories

DOC = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"


def doc_snippet(language: str) -> str:
    """The first fenced block of `language` in docs/webhooks.md."""
    match = re.search(rf"```{language}\n(.*?)```", DOC.read_text(), re.S)
    assert match, f"no {language} block in {DOC}"
    return match.group(1)


class Receiver:
    """An HTTP server that records each request and answers from a script of
    statuses (then 200), optionally after a delay."""

    def __init__(self, statuses=(), delay: float = 0.0, headers=None):
        self.requests: list[dict] = []
        self.statuses = list(statuses)
        self.delay = delay
        self.extra_headers = headers or {}
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver.arrived:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.requests.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": body,
                            "at": time.monotonic(),
                            "status": status,
                        }
                    )
                    receiver.arrived.notify_all()
                if receiver.delay:
                    time.sleep(receiver.delay)
                try:
                    self.send_response(status)
                    for name, value in receiver.extra_headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up on us

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)
        return list(self.requests)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made = []

    def make(**kwargs) -> Receiver:
        receiver = Receiver(**kwargs)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


@pytest.fixture(autouse=True)
def webhook_settings(settings):
    settings.CHAT_WEBHOOK_ALLOW_PRIVATE = True
    settings.CHAT_WEBHOOK_RETRY_BASE_SECONDS = 0.2
    settings.CHAT_WEBHOOK_RETRY_MAX_SECONDS = 1
    settings.CHAT_WEBHOOK_POLL_SECONDS = 0.05
    outbox.forget()
    yield settings
    outbox.forget()


@pytest.fixture
def acme():
    return factories.tenant_with_key("acme")


@pytest.fixture
def other():
    return factories.tenant_with_key("other")


def event(tenant, type_=outbox.MESSAGE_CREATED, **fields) -> dict:
    return {
        "id": fields.pop("id", new_ulid()),
        "type": type_,
        "tenant_id": tenant.id,
        "connection_id": fields.pop("connection_id", None),
        "occurred_at": "2026-11-26T10:00:01.123Z",
        "data": fields.pop("data", {"id": new_ulid(), "seq": 1, "body": "hello"}),
    }


def drain(timeout: float = 15.0, until=None) -> Sender:
    """Run `--once` rounds until `until()` holds (or once, without `until`)."""
    deadline = time.monotonic() + timeout
    while True:
        sender = Sender(threads=4, poll_seconds=0.05)
        sender.run(once=True)
        if until is None or until():
            return sender
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)
