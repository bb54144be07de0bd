"""`make run` binds its port before it says anything (real processes).

A port that another process holds stops run_local at once with a non-zero exit
and the hint `make run PORT=8100`, and nothing claims to be running; the web
role (`manage.py serve`) alone also exits non-zero. On a free port the banner
comes only once /readyz answers there.
"""

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from chatsvc.settings import BASE_DIR
from tests.servers import NOT_EMBEDDED, ServerProcess, manage

pytestmark = pytest.mark.e2e


def embedded_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in NOT_EMBEDDED}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", DEBUG="true")
    return env


def held_port(interface: str) -> socket.socket:
    """Someone else's service: a listening socket on interface, any free port."""
    holder = socket.socket()
    holder.bind((interface, 0))
    holder.listen()
    return holder


@pytest.mark.parametrize("interface", ["127.0.0.1", "0.0.0.0"])  # noqa: S104
def test_run_local_on_a_held_port_fails_loudly(tmp_path, interface):
    with held_port(interface) as holder:
        port = holder.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "manage.py", "run_local", "--port", str(port)],
            cwd=BASE_DIR,
            env=embedded_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert f"port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "make run PORT=8100" in done.stderr
    assert "running" not in done.stdout
    assert "/demo/" not in done.stdout + done.stderr


def test_serve_on_a_held_port_exits_non_zero(tmp_path):
    with held_port("127.0.0.1") as holder:
        port = holder.getsockname()[1]
        args = ("serve", "--host", "127.0.0.1", "--port", str(port))
        done = manage(*args, env=embedded_env(tmp_path))
    assert done.returncode != 0
    assert "Address already in use" in done.stderr
    assert "--port" in done.stderr


def test_run_local_on_a_free_port_is_ready_when_it_says_so(tmp_path):
    service = ServerProcess.run_local(database=tmp_path / "db.sqlite3", log=tmp_path / "run.log")
    try:
        deadline = time.monotonic() + 60
        while "Press Ctrl-C to stop." not in service.log_path.read_text():
            assert service.process.poll() is None, service.log_path.read_text()
            assert time.monotonic() < deadline, service.log_path.read_text()
            time.sleep(0.1)
        banner = service.log_path.read_text()
        assert f"chatsvc is running on embedded defaults at {service.url}" in banner
        assert "a new demo key on every start" in banner
        # Asked once, right after the banner: no retry, it must already answer.
        for path in ("/readyz", "/demo/"):
            with urllib.request.urlopen(service.url + path, timeout=5) as response:  # noqa: S310
                assert response.status == 200, path
    finally:
        assert service.stop() == 0, service.log_path.read_text()


def test_make_run_passes_port_through():
    plan = subprocess.run(
        ["make", "-n", "run", "PORT=8123"], cwd=BASE_DIR, capture_output=True, text=True, check=True
    ).stdout
    assert re.search(r"manage\.py run_local .*--port 8123", plan), plan
