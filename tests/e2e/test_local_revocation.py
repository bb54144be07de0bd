"""Local mode: a management command's revocation reaches the running web server.

The command runs in its own process and local mode's in-memory channel layer
reaches no other process; the web server's revocation sweep closes the
socket within seconds.
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest
import websockets

from chatsvc.settings import BASE_DIR
from tests.servers import NOT_EMBEDDED, ServerProcess

pytestmark = pytest.mark.e2e


def demo_token(base_url: str) -> str:
    with urllib.request.urlopen(base_url + "/demo/", timeout=10) as response:  # noqa: S310
        html = response.read().decode()
    return json.loads(
        re.search(r'<script id="token" type="application/json">(.*?)</script>', html)[1]
    )


async def test_rotate_tenant_key_revoke_others_closes_live_sockets(tmp_path):
    database = tmp_path / "db.sqlite3"
    service = ServerProcess.run_local(database=database, log=tmp_path / "run.log")
    try:
        service.wait_ready("/readyz")
        token = await asyncio.to_thread(demo_token, service.url)
        async with websockets.connect(service.ws_url) as socket:
            await socket.send(json.dumps({"type": "auth", "token": token}))
            assert json.loads(await socket.recv())["type"] == "ready"

            env = {k: v for k, v in os.environ.items() if k not in NOT_EMBEDDED}
            env.update(DATABASE_URL=f"sqlite:///{database}", DEBUG="true")
            command = [sys.executable, "manage.py", "rotate_tenant_key", "demo", "--revoke-others"]
            await asyncio.to_thread(
                subprocess.run, command, cwd=BASE_DIR, env=env, check=True, capture_output=True
            )
            revoked = time.monotonic()
            with pytest.raises(websockets.ConnectionClosed) as closed:
                async with asyncio.timeout(10):
                    while True:
                        await socket.recv()
            assert closed.value.rcvd.code == 4401
            assert time.monotonic() - revoked < 5  # the sweep runs every 2 s in local mode
    finally:
        assert service.stop() == 0
