"""docs/integration.md's token routes, run as an integrator would run them.

One local service (`manage.py run_local`, as `make run` starts it, on its own
SQLite file); a tenant from `manage.py create_tenant --json`; a course's room
from the REST API. Each example in examples/token-route/ runs as its own
process with that tenant's key id and signing secret, mints a token over HTTP,
and the token must open a real WebSocket session: ready as the example's user,
join the course's room, send, ack.
"""

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
import websockets

from chatsvc.settings import BASE_DIR
from tests.conftest import free_port, service_missing
from tests.servers import NOT_EMBEDDED, ServerProcess

pytestmark = pytest.mark.e2e

EXAMPLES = Path(BASE_DIR) / "examples" / "token-route"
COURSE = "course-101"


def http(method, url, *, body=None, key=None, timeout=10):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture(scope="module")
def chatsvc(tmp_path_factory):
    """The local service, a tenant created as the docs say, and a room for COURSE."""
    tmp = tmp_path_factory.mktemp("integration")
    database = tmp / "db.sqlite3"
    service = ServerProcess.run_local(database=database, log=tmp / "run.log")
    try:
        service.wait_ready("/readyz")
        env = {k: v for k, v in os.environ.items() if k not in NOT_EMBEDDED}
        env.update(DATABASE_URL=f"sqlite:///{database}", DEBUG="true")
        created = subprocess.run(
            [sys.executable, "manage.py", "create_tenant", "my-lms", "--json"],
            cwd=BASE_DIR,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        tenant = json.loads(created.stdout)
        status, room = http(
            "POST",
            service.url + "/api/v1/connections",
            body={"title": "Algebra 101", "metadata": {"course_id": COURSE}},
            key=tenant["api_key"],
        )
        assert status == 201, room
        yield service, tenant, room["connection_id"]
    finally:
        assert service.stop() == 0, service.log_path.read_text()


def example_command(language: str, port: int) -> list[str]:
    if language == "python":
        return [sys.executable, str(EXAMPLES / "python" / "token_route.py")]
    if language == "node":
        node = shutil.which("node")
        if node is None:
            service_missing("node is not installed")
        return [node, str(EXAMPLES / "node" / "token-route.mjs")]
    php = shutil.which("php")
    if php is None:
        pytest.skip("php is not installed (the PHP example is checked where it is)")
    return [php, "-S", f"127.0.0.1:{port}", str(EXAMPLES / "php" / "chat-token.php")]


@pytest.fixture(params=["python", "node", "php"])
def token_route(request, chatsvc, tmp_path):
    service, tenant, connection_id = chatsvc
    port = free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "CHATSVC_URL": service.url,
        "CHATSVC_KEY_ID": tenant["key_id"],
        "CHATSVC_SIGNING_SECRET": tenant["signing_secret"],
        "CHATSVC_COURSE_ROOMS": json.dumps({COURSE: connection_id}),
    }
    log = open(tmp_path / "example.log", "wb")
    process = subprocess.Popen(
        example_command(request.param, port),
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (tmp_path / "example.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the example did not listen in 20 s"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", connection_id
    finally:
        process.terminate()
        process.wait(10)
        log.close()


async def test_the_minted_token_opens_a_chat_session(token_route):
    base, connection_id = token_route
    status, minted = await asyncio.to_thread(http, "POST", f"{base}/chat-token?course={COURSE}")
    assert status == 200, minted
    assert minted["connection_id"] == connection_id
    assert minted["ws_url"].startswith("ws://") and minted["ws_url"].endswith("/ws/v1/")
    assert 3500 < minted["expires_at"] - time.time() <= 3600

    async with websockets.connect(minted["ws_url"]) as ws:
        await ws.send(json.dumps({"type": "auth", "token": minted["token"]}))
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready", ready
        assert ready["user"]["id"] == "u-1001"
        assert ready["user"]["name"] == "Ada Lovelace"
        await ws.send(json.dumps({"type": "join", "connection_id": connection_id}))
        frames = [json.loads(await ws.recv())]
        while frames[-1]["type"] != "joined":
            frames.append(json.loads(await ws.recv()))
        # A fresh client_id: the same user's resend of one would be answered, not posted.
        send = {"connection_id": connection_id, "client_id": uuid.uuid4().hex, "body": "hi"}
        await ws.send(json.dumps({"type": "send", **send}))
        seen = {}
        async with asyncio.timeout(15):
            while "ack" not in seen:
                frame = json.loads(await ws.recv())
                seen.setdefault(frame["type"], frame)
        assert seen["message"]["body"] == "hi"
        assert seen["message"]["sender"] == {"id": "u-1001", "name": "Ada Lovelace"}


async def test_a_course_without_a_room_gets_no_token(token_route):
    base, _ = token_route
    status, body = await asyncio.to_thread(http, "POST", f"{base}/chat-token?course=nope")
    assert status == 404
    assert "token" not in (body or {})


def test_the_guide_links_every_example():
    guide = (Path(BASE_DIR) / "docs" / "integration.md").read_text()
    for example in EXAMPLES.rglob("*"):
        if example.is_file():
            assert str(example.relative_to(BASE_DIR)) in guide, example
