"""The smoke test against the real service started locally (embedded mode), and
against broken ones: it must pass on the first and fail, clearly, on the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.servers import NOT_EMBEDDED, ServerProcess

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def smoke(url: str, api_key: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.smoke_test", "--url", url, "--api-key", api_key,
         "--timeout", "10", *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """manage.py migrate, create_tenant smoke --json, run_local: the contract's way."""
    tmp = tmp_path_factory.mktemp("smoke-service")
    env = {k: v for k, v in os.environ.items() if k not in NOT_EMBEDDED}
    env.update(DATABASE_URL=f"sqlite:///{tmp / 'db.sqlite3'}", DEBUG="true")
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    created = subprocess.run([*manage, "create_tenant", "smoke", "--json"], cwd=ROOT, env=env,
                             check=True, capture_output=True, text=True, timeout=60)  # fmt: skip
    tenant = json.loads(created.stdout)
    service = ServerProcess.run_local(database=tmp / "db.sqlite3", log=tmp / "run_local.log")
    yield service.wait_ready("/readyz", timeout=90).url, tenant["api_key"]
    service.stop()


def test_passes_against_the_real_service(service):
    url, api_key = service
    result = smoke(url, api_key)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    steps = [line.split("  ")[0].strip() for line in lines if line.startswith("ok")]
    assert len(steps) == 6, result.stdout
    assert any("acknowledged and delivered to both clients" in line for line in lines)
    assert "close connection" in result.stdout
    assert lines[-1] == "smoke test passed"


def test_fails_with_a_wrong_api_key(service):
    url, _ = service
    result = smoke(url, "not-the-key")
    assert result.returncode == 1
    assert "ok    GET /readyz" in result.stdout
    assert "FAIL  POST /api/v1/connections: HTTP 401" in result.stderr
    assert "smoke test FAILED" in result.stderr


class Broken(BaseHTTPRequestHandler):
    """A release that is up but wrong: configurable per server."""

    ready_status = 503
    calls: list[str]

    def log_message(self, *args):
        pass

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.calls.append(f"GET {self.path}")
        if self.path == "/readyz":
            status = self.ready_status
            self._json(status, {"status": "ok" if status == 200 else "unavailable"})
        else:
            self._json(404, {"error": {"code": "not_found", "message": "no"}})

    def do_POST(self):
        self.calls.append(f"POST {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if self.path == "/api/v1/connections":
            self._json(201, {"connection_id": "01J0000000000000000000ROOM", "title": "t",
                             "status": "open", "created_at": "now"})  # fmt: skip
        elif self.path == "/api/v1/tokens":
            self._json(200, {"token": "t", "expires_at": "later"})
        elif self.path.endswith("/close"):
            self._json(200, {"status": "closed"})
        else:
            self._json(404, {"error": {"code": "not_found", "message": "no"}})


@pytest.fixture
def broken():
    servers = []

    def start(ready_status: int) -> tuple[str, list[str]]:
        calls: list[str] = []
        handler = type("Handler", (Broken,), {"ready_status": ready_status, "calls": calls})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", calls

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_fails_when_readyz_is_503(broken):
    url, _ = broken(503)
    result = smoke(url, "key", "--ready-timeout", "1")
    assert result.returncode == 1
    assert "FAIL  readyz: not ready after 1s: HTTP 503" in result.stderr


def test_fails_when_websockets_are_broken_and_still_closes_the_room(broken):
    url, calls = broken(200)  # REST answers, but /ws/v1/ is no WebSocket endpoint
    result = smoke(url, "key")
    assert result.returncode == 1
    assert "FAIL  smoke-a: WebSocket connect to ws://127.0.0.1:" in result.stderr
    assert calls[-1] == "POST /api/v1/connections/01J0000000000000000000ROOM/close"


def test_fails_when_nothing_listens():
    result = smoke(f"http://127.0.0.1:{free_port()}", "key", "--ready-timeout", "0")
    assert result.returncode == 1
    assert "cannot connect" in result.stderr


def test_usage_errors():
    assert smoke("ftp://x", "key").returncode == 2
    assert smoke("http://x", " ").returncode == 2
