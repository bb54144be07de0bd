"""Fault drills: real server processes, a real Redis, real clients that resume.

One implementation for two front ends: the integration tests assert on a
drill's numbers (tests/integration/test_drills.py) and `make drills`
(bench/drills.py) prints them. A drill runs a chat in one room with clients
spread over two `serve` processes that share a private Redis, injects one
fault mid-conversation, lets the clients recover the way the reference
client does (reconnect with backoff, rejoin with `since`, fill from
`history` when not recovered, resend unacked sends with the same client_id),
then counts what each client ended with against what was acknowledged and
what the worker stored.
"""

import asyncio
import itertools
import json
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import websockets

from tests.conftest import free_port
from tests.servers import ServerProcess

FAULTS = ("pubsub_kill", "redis_restart", "redis_wipe", "sigterm", "sigkill")


class PrivateRedis:
    """A redis-server of the drill's own, so it can be restarted and killed.

    It keeps its data across restarts (append-only file, fsync always), as a
    replicated production Redis does across a failover.
    """

    def __init__(self, directory: Path):
        self.port = free_port()
        self.directory = directory
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while self.cli("PING") != "PONG":
            if time.monotonic() > deadline:
                raise TimeoutError("private redis-server did not start")
            time.sleep(0.05)

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, timeout=5
        )
        return result.stdout.strip()

    def restart(self, *, down_seconds: float = 0.5, keep_data: bool = True) -> None:
        self.stop()
        if not keep_data:  # a failover to a replica that had nothing
            for path in self.directory.glob("appendonly*"):
                shutil.rmtree(path) if path.is_dir() else path.unlink()
        time.sleep(down_seconds)
        self.start()

    def kill_pubsub(self) -> None:
        self.cli("CLIENT", "KILL", "TYPE", "pubsub")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@dataclass
class ClientTally:
    name: str
    received: dict = field(default_factory=dict)  # message id -> seq
    arrivals: list = field(default_factory=list)  # monotonic time of each new message
    duplicates: int = 0  # deliveries of an id already held (replay, history overlap)
    seq_jumps: int = 0  # live messages whose seq skipped past the last one
    closes: list = field(default_factory=list)
    resumed: int = 0  # joins answered recovered: true
    filled: int = 0  # joins answered recovered: false (history fill)


class ResumeClient:
    """A protocol v1 client that never loses what it should see (Python twin of chatsvc.js)."""

    def __init__(self, *, urls: list[str], token: str, room: str, name: str, start: int = 0):
        self.urls = urls
        self.url_index = start
        self.token = token
        self.room = room
        self.tally = ClientTally(name)
        self.seq: int | None = None
        self.epoch: str | None = None
        self.outbox: dict[str, str] = {}  # client_id -> body, until acked
        self.acked: dict[str, str] = {}  # client_id -> message id
        self.socket = None
        self.connected = asyncio.Event()
        self.stopping = False
        self.task: asyncio.Task | None = None
        self.resends: set[asyncio.Task] = set()

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self.stopping = True
        if self.socket is not None:
            await self.socket.close()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)

    async def send(self, body: str) -> str:
        client_id = uuid.uuid4().hex
        self.outbox[client_id] = body
        await self._send_frame(self._send_frame_of(client_id))
        return client_id

    def _send_frame_of(self, client_id: str) -> dict:
        body = self.outbox[client_id]
        return {"type": "send", "connection_id": self.room, "client_id": client_id, "body": body}

    async def _send_frame(self, frame: dict) -> None:
        if self.socket is None or not self.connected.is_set():
            return  # sent again after the next join
        try:
            await self.socket.send(json.dumps(frame))
        except websockets.ConnectionClosed:
            pass

    async def _run(self) -> None:
        attempt = 0
        while not self.stopping:
            url = self.urls[self.url_index % len(self.urls)]
            try:
                async with websockets.connect(url, open_timeout=5, max_queue=None) as socket:
                    self.socket = socket
                    attempt = 0
                    await self._session(socket)
            except (OSError, websockets.InvalidHandshake, TimeoutError):
                pass
            except websockets.ConnectionClosed as closed:
                self.tally.closes.append(closed.rcvd.code if closed.rcvd else 1006)
            self.connected.clear()
            self.socket = None
            if self.stopping:
                return
            # Full jitter; the next server (a load balancer would pick one).
            attempt += 1
            self.url_index += 1
            await asyncio.sleep(random.uniform(0, min(2.0, 0.1 * 2**attempt)))

    async def _session(self, socket) -> None:
        await socket.send(json.dumps({"type": "auth", "token": self.token}))
        await self._join(socket)
        async for raw in socket:
            await self._handle(socket, json.loads(raw))

    async def _join(self, socket) -> None:
        join = {"type": "join", "connection_id": self.room}
        if self.seq is not None:
            join.update(since=self.seq, epoch=self.epoch)
        await socket.send(json.dumps(join))

    async def _handle(self, socket, frame: dict) -> None:
        kind = frame["type"]
        if kind == "message":
            self._take(frame, live=True)
        elif kind == "joined":
            await self._joined(socket, frame)
        elif kind == "ack":
            self.outbox.pop(frame["client_id"], None)
            self.acked[frame["client_id"]] = frame["id"]
        elif kind == "history":
            self._history_page(frame)
        elif kind == "left" and frame.get("reason") == "resync":
            self.connected.clear()
            await self._join(socket)
        elif kind == "error" and frame["code"] in ("not_stored", "unavailable", "overloaded"):
            client_id = frame.get("ref")
            if client_id in self.outbox:
                asyncio.get_running_loop().call_later(
                    random.uniform(0.05, 0.3), self._resend_soon, client_id
                )

    def _resend_soon(self, client_id: str) -> None:
        if client_id in self.outbox:
            task = asyncio.ensure_future(self._send_frame(self._send_frame_of(client_id)))
            self.resends.add(task)
            task.add_done_callback(self.resends.discard)

    async def _joined(self, socket, frame: dict) -> None:
        had = self.seq
        if frame.get("recovered"):
            self.tally.resumed += 1
        elif had is not None:
            self.tally.filled += 1
            await socket.send(
                json.dumps({"type": "history", "connection_id": self.room, "limit": 100})
            )
        if not frame.get("recovered"):  # live from here; history fills what came before
            self.seq = frame.get("seq")
        self.epoch = frame.get("epoch")
        self.connected.set()
        for client_id in list(self.outbox):  # unacked: resend, same client_id
            await socket.send(json.dumps(self._send_frame_of(client_id)))

    def _history_page(self, frame: dict) -> None:
        for message in reversed(frame["messages"]):
            self._take(message, live=False)

    def _take(self, message: dict, *, live: bool) -> None:
        if message["id"] in self.tally.received:
            self.tally.duplicates += 1
            return
        seq = message.get("seq")
        self.tally.received[message["id"]] = seq
        self.tally.arrivals.append(time.monotonic())
        if live and seq is not None and self.seq is not None:
            if seq > self.seq + 1:
                self.tally.seq_jumps += 1
            self.seq = max(self.seq, seq)


@dataclass
class DrillResult:
    drill: str
    clients: int
    sent: int
    acked: int
    stored: int
    acked_but_lost: int
    missing_deliveries: int
    duplicates: int
    seq_jumps: int
    longest_gap_ms: int
    resumed: int
    filled_from_history: int
    closes: dict

    def line(self) -> str:
        return json.dumps(self.__dict__, sort_keys=False)


@dataclass
class Stack:
    """What a drill runs against: two web processes, a worker, a private Redis."""

    redis: PrivateRedis
    servers: list[ServerProcess]
    worker: subprocess.Popen
    env: dict

    @classmethod
    def start(cls, *, env: dict, directory: Path) -> "Stack":
        redis = PrivateRedis(directory)
        env = {**env, "REDIS_URL": redis.url, "CHAT_DRAIN_SECONDS": "2"}
        servers = [
            ServerProcess.serve(env=env, log=directory / f"web{n}.log").wait_ready()
            for n in range(2)
        ]
        worker_log = open(directory / "worker.log", "ab")
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "consume_queue", "--wait-seconds", "1"],
            cwd=Path(__file__).resolve().parents[1],
            env=env,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
        )
        return cls(redis, servers, worker, env)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
        self.worker.send_signal(signal.SIGTERM)
        try:
            self.worker.wait(30)
        except subprocess.TimeoutExpired:
            self.worker.kill()
        self.redis.stop()


def inject(fault: str, stack: Stack) -> None:
    if fault == "pubsub_kill":
        stack.redis.kill_pubsub()
    elif fault == "redis_restart":
        stack.redis.restart()
    elif fault == "redis_wipe":
        stack.redis.restart(keep_data=False)
    elif fault == "sigterm":
        stack.servers[0].process.send_signal(signal.SIGTERM)
    elif fault == "sigkill":
        stack.servers[0].process.kill()
    else:
        raise ValueError(f"unknown fault {fault!r}")


async def run_drill(
    fault: str,
    *,
    stack: Stack,
    tokens: list[str],
    room: str,
    stored_ids,
    rate: float = 20.0,
    seconds: float = 6.0,
    settle_seconds: float = 20.0,
) -> DrillResult:
    """A steady conversation with `fault` a third of the way in; `stored_ids()` reads DynamoDB."""
    urls = [server.ws_url for server in stack.servers]
    clients = [
        ResumeClient(urls=urls, token=token, room=room, name=f"c{n}", start=n)
        for n, token in enumerate(tokens)
    ]
    for client in clients:
        client.start()
    await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in clients)), 20)
    senders = clients[:2]  # one on each server
    sent = 0
    started = time.monotonic()
    injected = False
    while (elapsed := time.monotonic() - started) < seconds:
        if not injected and elapsed >= seconds / 3:
            await asyncio.to_thread(inject, fault, stack)
            injected = True
        await senders[sent % 2].send(f"m{sent}")
        sent += 1
        await asyncio.sleep(1 / rate)
    send_window = (started, time.monotonic())

    acked_ids = await _settle(senders, clients, settle_seconds)
    stored = await asyncio.to_thread(_wait_stored, stored_ids, acked_ids, settle_seconds)
    for client in clients:
        await client.stop()
    tallies = [client.tally for client in clients]
    closes: dict[str, int] = {}
    for tally in tallies:
        for code in tally.closes:
            closes[str(code)] = closes.get(str(code), 0) + 1
    return DrillResult(
        drill=fault,
        clients=len(clients),
        sent=sent,
        acked=len(acked_ids),
        stored=len(stored & acked_ids),
        acked_but_lost=len(acked_ids - stored),
        missing_deliveries=sum(len(acked_ids - set(t.received)) for t in tallies),
        duplicates=sum(t.duplicates for t in tallies),
        seq_jumps=sum(t.seq_jumps for t in tallies),
        longest_gap_ms=max(_longest_gap(t.arrivals, send_window) for t in tallies),
        resumed=sum(t.resumed for t in tallies),
        filled_from_history=sum(t.filled for t in tallies),
        closes=closes,
    )


async def _settle(senders, clients, timeout: float) -> set[str]:
    """Wait until every send is acked and every client holds every acked message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        acked = {mid for sender in senders for mid in sender.acked.values()}
        if not any(s.outbox for s in senders) and all(
            acked <= set(c.tally.received) for c in clients
        ):
            return acked
        await asyncio.sleep(0.2)
    return {mid for sender in senders for mid in sender.acked.values()}


def _wait_stored(stored_ids, acked: set[str], timeout: float) -> set[str]:
    deadline = time.monotonic() + timeout
    while True:
        stored = set(stored_ids())
        if acked <= stored or time.monotonic() > deadline:
            return stored
        time.sleep(0.5)


def _longest_gap(arrivals: list[float], window: tuple[float, float]) -> int:
    """The longest pause between new messages while the conversation was steady, in ms."""
    start, end = window
    inside = [t for t in arrivals if start <= t <= end + 2]
    if len(inside) < 2:
        return 0
    return round(max(b - a for a, b in itertools.pairwise(inside)) * 1000)
