"""`manage.py serve --workers N`: one port, N real server processes, one Redis.

Which worker holds a connection is read from /proc (Linux), not asked of the
server: the server side of a client's TCP connection is a socket inode, and
exactly one worker has it open. A worker is ready once it logged `serving on`
(JSON lines carry each worker's pid).
"""

import asyncio
import json
import os
import signal
import socket
import time
import urllib.request
from pathlib import Path

import pytest

from chatsvc.core.workers import available_cpus
from tests import factories
from tests.conftest import free_port
from tests.realtime.multiprocess import Peer
from tests.servers import NOT_EMBEDDED, ServerProcess, manage, server_env

pytestmark = pytest.mark.integration
with_database = pytest.mark.django_db(transaction=True)

TCP_ESTABLISHED, TCP_LISTEN = 0x01, 0x0A
DRAIN_SECONDS = 1
# serve's bound: drain + CHAT_SEND_DEADLINE_SECONDS (10) + flush margin (3) + 5 s.
STOP_BOUND_SECONDS = DRAIN_SECONDS + 10 + 3 + 5


def process_state(pid: int) -> str | None:
    """R, S, Z ... from /proc/PID/stat, or None once the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")


async def wait_gone(pids, timeout: float) -> None:
    """Until none of pids runs (exited: reaped, or a zombie nobody reaped yet)."""
    deadline = time.monotonic() + timeout
    while {process_state(pid) for pid in pids} - {None, "Z"}:
        assert time.monotonic() < deadline, f"{pids} still run"
        await asyncio.sleep(0.1)


def children_of(pid: int) -> set[int]:
    """The live (not zombie) child processes of pid."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        if int(parent) == pid and state != "Z":
            found.add(int(stat.parent.name))
    return found


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def tcp_sockets(port: int) -> list[tuple[int, int, int]]:
    """(state, remote port, inode) of every IPv4 TCP socket whose local port is port."""
    rows = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            rows.append((int(fields[3], 16), int(fields[2].rsplit(":", 1)[1], 16), int(fields[9])))
    return rows


def worker_holding(server, peer, workers) -> int | None:
    """The worker that accepted this client's connection."""
    client_port = peer.socket.local_address[1]
    ends = {
        inode
        for state, remote, inode in tcp_sockets(server.port)
        if state == TCP_ESTABLISHED and remote == client_port
    }
    return next((pid for pid in workers if ends & socket_inodes(pid)), None)


def serving_lines(server) -> list[dict]:
    lines = []
    for line in server.log_path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # a traceback line, or a line still being written
        if isinstance(entry, dict) and str(entry.get("message")).startswith("serving on"):
            lines.append(entry)
    return lines


def serving_pids(server) -> set[int]:
    return {entry["pid"] for entry in serving_lines(server)}


def wait_serving(server, count: int, timeout=30.0) -> set[int]:
    """The supervisor's children, once there are `count` and each one is serving."""
    deadline = time.monotonic() + timeout
    while True:
        workers = children_of(server.process.pid)
        if len(workers) == count and workers <= serving_pids(server):
            return workers
        assert server.process.poll() is None, server.log_path.read_text()
        assert time.monotonic() < deadline, server.log_path.read_text()
        time.sleep(0.2)


def status_of(server, path: str) -> int:
    with urllib.request.urlopen(server.url + path, timeout=5) as response:  # noqa: S310
        return response.status


async def peers_on_every_worker(server, workers, chat, most=150) -> dict[int, Peer]:
    """Connect until every worker holds one peer (the kernel picks who accepts)."""
    issued, room = chat
    token = factories.token_for(issued, user_id="spread")
    found, spare = {}, []
    for _ in range(most):
        peer = await Peer.open(server, token, room)
        worker = worker_holding(server, peer, workers)
        if worker is None or worker in found:
            spare.append(peer)
        else:
            found[worker] = peer
        if set(found) == set(workers):
            break
    await asyncio.gather(*(peer.close() for peer in spare))
    assert set(found) == set(workers), f"{most} connections reached only {sorted(found)}"
    return found


@pytest.fixture
def chat(transactional_db):
    issued = factories.tenant_with_key("acme", messages_per_second=100, max_sockets_per_user=1000)
    return issued, factories.room_for(issued).connection_id


@pytest.fixture
def start_workers(postgres_url, redis_url, aws, tmp_path):
    started = []

    def start(workers=2):
        env = {
            **server_env(database_url=postgres_url, redis_url=redis_url, aws=aws),
            "LOG_LEVEL": "INFO",  # `serving on`, with each worker's pid
            "CHAT_DRAIN_SECONDS": str(DRAIN_SECONDS),
        }
        log = tmp_path / f"server{len(started)}.log"
        server = ServerProcess.serve(env=env, log=log, workers=workers)
        started.append(server)
        server.wait_ready()
        wait_serving(server, workers)
        return server

    yield start
    for server in started:
        server.stop()


def embedded_env(tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in NOT_EMBEDDED}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", DEBUG="true")
    return env


@with_database
async def test_two_workers_serve_one_port_and_deliver_to_each_others_clients(start_workers, chat):
    server = start_workers(workers=2)
    supervisor = server.process.pid
    workers = children_of(supervisor)
    (listening,) = [inode for state, _, inode in tcp_sockets(server.port) if state == TCP_LISTEN]
    for pid in (supervisor, *workers):
        assert listening in socket_inodes(pid)
    # entrypoint.sh's health check finds the web role by PID 1's command line.
    assert "manage.py serve" in command_line(supervisor)
    assert [status_of(server, "/healthz") for _ in range(10)] == [200] * 10
    # CHAT_UVLOOP (default): each worker's reactor runs on uvloop (manage.py sets it
    # before Django imports daphne, which picks the loop).
    assert {entry["event_loop"] for entry in serving_lines(server)} == {"uvloop"}

    first, second = (await peers_on_every_worker(server, workers, chat)).values()
    _, room = chat
    await first.send({"type": "send", "connection_id": room, "client_id": "1", "body": "to 2"})
    assert (await second.expect("message", body="to 2"))["sender"]["id"] == "spread"
    await second.send({"type": "send", "connection_id": room, "client_id": "2", "body": "to 1"})
    await first.expect("message", body="to 1")


@with_database
async def test_sigterm_to_the_supervisor_drains_every_worker(start_workers, chat):
    server = start_workers(workers=2)
    workers = children_of(server.process.pid)
    peers = await peers_on_every_worker(server, workers, chat)

    began = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    codes = await asyncio.gather(*(peer.expect_closed(timeout=10) for peer in peers.values()))
    assert codes == [1012, 1012]
    assert await asyncio.to_thread(server.process.wait, STOP_BOUND_SECONDS) == 0
    assert time.monotonic() - began < STOP_BOUND_SECONDS
    assert [process_state(pid) for pid in workers] == [None, None]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()


@with_database
async def test_a_worker_that_dies_is_replaced(start_workers, chat):
    server = start_workers(workers=2)
    victim, survivor = sorted(children_of(server.process.pid))

    os.kill(victim, signal.SIGKILL)
    await wait_gone([victim], timeout=5)
    assert status_of(server, "/healthz") == 200  # the survivor accepts meanwhile
    workers = await asyncio.to_thread(wait_serving, server, 2)

    assert survivor in workers and victim not in workers
    assert f"(pid {victim}) was killed by SIGKILL" in server.log_path.read_text()
    await peers_on_every_worker(server, workers, chat)  # the replacement accepts too


@with_database
async def test_workers_stop_when_their_supervisor_is_killed(start_workers):
    server = start_workers(workers=2)
    workers = children_of(server.process.pid)

    server.process.kill()
    server.process.wait()
    await wait_gone(workers, timeout=STOP_BOUND_SECONDS)


@pytest.mark.parametrize(
    "args, env", [(["--workers", "2"], {}), ([], {"CHAT_WEB_WORKERS": "2"})], ids=["flag", "env"]
)
def test_several_workers_without_redis_are_refused(tmp_path, args, env):
    done = manage("serve", "--port", str(free_port()), *args, env={**embedded_env(tmp_path), **env})
    assert done.returncode != 0
    assert "2 web workers need Redis (REDIS_URL)" in done.stderr
    assert "--workers 1" in done.stderr


def test_without_redis_the_default_is_one_process(tmp_path):
    log = tmp_path / "server.log"
    server = ServerProcess.serve(env=embedded_env(tmp_path), log=log, workers=None)
    try:
        server.wait_ready()
        assert children_of(server.process.pid) == set()
        if available_cpus() > 1:
            assert "REDIS_URL is not set: serving with 1 process" in log.read_text()
    finally:
        assert server.stop() == 0
