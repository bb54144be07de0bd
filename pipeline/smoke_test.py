"""Smoke-test a release through the test listener before anyone swaps to it.

    python -m pipeline.smoke_test --url http://<alb-dns>:8080 --api-key KEY

Checks, in order, printing one line per step: ``GET /readyz`` answers 200 with
status ok (retried for ``--ready-timeout`` seconds); a room is created through
the REST API; two user tokens are minted for it; two WebSocket clients
authenticate and join; one sends a message and gets its ``ack``; both receive
the ``message`` with the same id and body; the room is closed (also after a
failure, when it was created).

Exit codes: 0 all passed, 1 a step failed (the ``FAIL`` line says which and
why), 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

from websockets.exceptions import WebSocketException
from websockets.sync.client import ClientConnection, connect

from pipeline import EXIT_FAILED, EXIT_OK, EXIT_USAGE


class SmokeFailure(Exception):
    """A step failed; the message is the reason."""


class Http:
    def __init__(self, base: str, api_key: str, timeout: float):
        self.base = base.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def request(
        self, method: str, path: str, body: dict | None = None, auth: bool = True
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json", "User-Agent": "chatsvc-smoke-test"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if auth:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(  # noqa: S310 - the URL scheme is checked in main()
            self.base + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        except (urllib.error.URLError, OSError) as exc:
            raise SmokeFailure(f"{method} {path}: cannot connect: {exc}") from exc
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw[:200].decode("utf-8", "replace")

    def expect(self, method: str, path: str, body: dict | None, statuses: tuple[int, ...]) -> Any:
        status, payload = self.request(method, path, body)
        if status not in statuses:
            raise SmokeFailure(f"{method} {path}: HTTP {status}: {_error_text(payload)}")
        return payload


def _error_text(payload: Any) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
        err = payload["error"]
        return f"{err.get('code', '?')}: {err.get('message', '')}"
    return str(payload)[:300]


def ws_url(base: str) -> str:
    parts = urllib.parse.urlsplit(base)
    scheme = {"http": "ws", "https": "wss"}[parts.scheme]
    return urllib.parse.urlunsplit((scheme, parts.netloc, "/ws/v1/", "", ""))


class Client:
    """One WebSocket user: waits for frames of a type, ignoring the others."""

    def __init__(self, name: str, conn: ClientConnection, timeout: float):
        self.name = name
        self.conn = conn
        self.timeout = timeout

    def send(self, frame: dict) -> None:
        self.conn.send(json.dumps(frame))

    def wait_for(self, accept: Callable[[dict], bool], what: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SmokeFailure(f"{self.name}: no {what} within {self.timeout:.0f}s")
            try:
                raw = self.conn.recv(timeout=remaining)
            except TimeoutError:
                continue
            except WebSocketException as exc:
                raise SmokeFailure(f"{self.name}: socket closed waiting for {what}: {exc}") from exc
            try:
                frame = json.loads(raw)
            except (TypeError, ValueError):
                raise SmokeFailure(f"{self.name}: non-JSON frame: {raw!r:.200}") from None
            if frame.get("type") == "error":
                raise SmokeFailure(
                    f"{self.name}: server error while waiting for {what}: "
                    f"{frame.get('code')}: {frame.get('message')}"
                )
            if accept(frame):
                return frame


def run(
    url: str,
    api_key: str,
    *,
    timeout: float = 10,
    ready_timeout: float = 30,
    origin: str | None = None,
    log: Callable[[str], None] = print,
) -> None:
    """Run every step; raise SmokeFailure at the first failing one."""
    http = Http(url, api_key, timeout)
    step_started = time.monotonic()

    def ok(step: str) -> None:
        nonlocal step_started
        elapsed = (time.monotonic() - step_started) * 1000
        log(f"ok    {step} ({elapsed:.0f} ms)")
        step_started = time.monotonic()

    # 1. readiness, retried: a freshly deployed task may still be warming up.
    deadline = time.monotonic() + ready_timeout
    while True:
        try:
            status, payload = http.request("GET", "/readyz", auth=False)
            ready = status == 200 and isinstance(payload, dict) and payload.get("status") == "ok"
            problem = f"HTTP {status}: {str(payload)[:300]}"
        except SmokeFailure as exc:
            ready, problem = False, str(exc)
        if ready:
            break
        if time.monotonic() >= deadline:
            raise SmokeFailure(f"readyz: not ready after {ready_timeout:.0f}s: {problem}")
        time.sleep(1)
    ok("GET /readyz")

    room = http.expect("POST", "/api/v1/connections", {"title": "smoke test"}, (201,))
    connection_id = room.get("connection_id") if isinstance(room, dict) else None
    if not connection_id:
        raise SmokeFailure(f"POST /api/v1/connections: no connection_id in {room!r:.200}")
    ok(f"create connection {connection_id}")
    try:
        _chat(http, url, connection_id, timeout, origin, ok)
    except SmokeFailure:
        # Close the room anyway; the first failure is the one to report.
        try:
            http.request("POST", f"/api/v1/connections/{connection_id}/close")
        except SmokeFailure:
            pass
        raise
    http.expect("POST", f"/api/v1/connections/{connection_id}/close", None, (200, 204))
    ok("close connection")


def _chat(http: Http, url: str, connection_id: str, timeout: float, origin, ok) -> None:
    tokens = {}
    for user in ("smoke-a", "smoke-b"):
        minted = http.expect(
            "POST",
            "/api/v1/tokens",
            {
                "user_id": user,
                "name": f"Smoke {user[-1].upper()}",
                "connection_ids": [connection_id],
                "ttl_seconds": 300,
            },
            (200, 201),
        )
        if not isinstance(minted, dict) or not minted.get("token"):
            raise SmokeFailure(f"POST /api/v1/tokens: no token in {minted!r:.200}")
        tokens[user] = minted["token"]
    ok("mint two user tokens")

    headers = {"Origin": origin} if origin else None
    clients: list[Client] = []
    try:
        for user, token in tokens.items():
            try:
                conn = connect(
                    ws_url(url), open_timeout=timeout, additional_headers=headers, max_size=2**20
                )
            except (OSError, WebSocketException, TimeoutError) as exc:
                raise SmokeFailure(
                    f"{user}: WebSocket connect to {ws_url(url)} failed: {exc}"
                ) from exc
            client = Client(user, conn, timeout)
            clients.append(client)
            client.send({"type": "auth", "token": token})
            client.wait_for(lambda f: f.get("type") == "ready", "ready after auth")
            client.send({"type": "join", "connection_id": connection_id})
            client.wait_for(
                lambda f: f.get("type") == "joined" and f.get("connection_id") == connection_id,
                "joined",
            )
        ok("two WebSocket clients authenticated and joined")

        sender, receiver = clients
        client_id = f"smoke-{uuid.uuid4().hex}"
        body = f"smoke test {client_id}"
        sender.send(
            {"type": "send", "connection_id": connection_id, "client_id": client_id, "body": body}
        )
        got: dict[str, dict] = {}

        def is_ours(frame: dict) -> bool:
            return (
                frame.get("type") == "message"
                and frame.get("connection_id") == connection_id
                and frame.get("body") == body
            )

        def sender_frames(frame: dict) -> bool:
            if frame.get("type") == "ack" and frame.get("client_id") == client_id:
                got["ack"] = frame
            elif is_ours(frame):
                got["echo"] = frame
            return "ack" in got and "echo" in got

        sender.wait_for(sender_frames, "ack and own message")
        delivered = receiver.wait_for(is_ours, "the message from the other client")
        ids = {got["ack"].get("id"), got["echo"].get("id"), delivered.get("id")}
        if len(ids) != 1 or None in ids:
            raise SmokeFailure(
                f"ack and deliveries disagree on the message id: {sorted(map(str, ids))}"
            )
        sender_id = (delivered.get("sender") or {}).get("id")
        if sender_id != "smoke-a":
            raise SmokeFailure(f"delivered message names sender {sender_id!r}, expected 'smoke-a'")
        ok(f"message {delivered['id']} acknowledged and delivered to both clients")
    finally:
        for client in clients:
            try:
                client.conn.close()
            except Exception:  # noqa: S110 - closing is best effort
                pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.smoke_test",
        description=(
            "Smoke-test chatsvc through the test listener: readyz, REST room and tokens, "
            "two WebSocket clients exchanging a message, close the room."
        ),
        epilog="Exit codes: 0 passed, 1 a step failed, 2 bad usage.",
    )
    parser.add_argument("--url", required=True, help="base URL, e.g. http://alb-dns:8080")
    parser.add_argument("--api-key", required=True, help="a tenant API key for smoke tests")
    parser.add_argument("--timeout", type=float, default=10, help="per-step seconds (10)")
    parser.add_argument(
        "--ready-timeout", type=float, default=30, help="seconds to wait for /readyz (30)"
    )
    parser.add_argument("--origin", help="Origin header for the WebSockets (default: none)")
    args = parser.parse_args(argv)
    if urllib.parse.urlsplit(args.url).scheme not in ("http", "https"):
        print(f"FAIL  --url must be http(s)://..., not {args.url!r}", file=sys.stderr)
        return EXIT_USAGE
    if not args.api_key.strip():
        print("FAIL  --api-key is empty (is SMOKE_API_KEY set?)", file=sys.stderr)
        return EXIT_USAGE
    print(f"smoke test against {args.url}")
    try:
        run(
            args.url,
            args.api_key,
            timeout=args.timeout,
            ready_timeout=args.ready_timeout,
            origin=args.origin,
        )
    except SmokeFailure as exc:
        print(f"FAIL  {exc}", file=sys.stderr)
        print("smoke test FAILED", file=sys.stderr)
        return EXIT_FAILED
    print("smoke test passed")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
