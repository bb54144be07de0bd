"""Slow readers are cut off (chatsvc.core.websocket_protocol): the room goes on at
full speed, the stalled socket gets close 1013, and a resume with `since` gets
everything it missed."""

import asyncio
import base64
import json
import os
import socket
import struct
import time

import pytest
from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor

from chatsvc.core import websocket_protocol
from chatsvc.core.websocket_protocol import ChatWebSocketProtocol, pending_bytes
from tests import factories
from tests.realtime import multiprocess
from tests.realtime.multiprocess import Peer

# --- the pending byte count, on a real socket ---------------------------------------


def read_up_to(peer: socket.socket, received: bytearray, total: int) -> None:
    """Read until `total` bytes arrived in all (not one more), or fail after 10 s."""
    peer.settimeout(10)
    while len(received) < total:
        chunk = peer.recv(total - len(received))
        assert chunk, "the connection closed"
        received += chunk


@pytest.fixture
def stalled():
    """A Twisted TCP transport (no reactor) and its peer socket, which reads only
    when told: small fixed buffers, so the kernel takes little."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = socket.socket()
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        peer.connect(listener.getsockname())
        accepted, _ = listener.accept()
    accepted.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
    transport = tcp.Connection(accepted, Protocol(), reactor=MemoryReactor())
    transport.connected = 1
    try:
        yield transport, peer
    finally:
        peer.close()
        accepted.close()


def drain(transport, peer, received: bytearray, total: int) -> None:
    """Let Twisted write what it holds while the peer reads it, up to `total` bytes."""
    while pending_bytes(transport):
        transport.doWrite()
        read_up_to(peer, received, total - pending_bytes(transport))


def test_pending_bytes_is_what_twisted_holds_for_the_socket(stalled):
    """Fails loudly when a Twisted upgrade changes FileDescriptor's buffers."""
    transport, peer = stalled
    data = os.urandom(2 << 20)
    assert pending_bytes(transport) == 0
    transport.write(data[: 1 << 20])
    assert pending_bytes(transport) == 1 << 20  # nothing goes out before doWrite
    transport.doWrite()
    taken = (1 << 20) - pending_bytes(transport)
    assert 0 < taken < 1 << 20  # the kernel took some, the stalled peer holds it up
    transport.write(data[1 << 20 :])  # waits behind, in the second buffer
    assert pending_bytes(transport) == (2 << 20) - taken

    # Whatever the kernel took reaches the peer: exactly all but the pending bytes.
    received = bytearray()
    drain(transport, peer, received, len(data))
    assert bytes(received) == data


def test_write_now_sends_at_once_and_queues_only_what_the_kernel_does_not_take(stalled):
    """Frames skip Twisted's buffer while it is empty, never overtake what is in it."""
    transport, peer = stalled
    small, large, after = b"hello", os.urandom(1 << 20), os.urandom(1000)
    websocket_protocol.write_now(transport, small)
    assert pending_bytes(transport) == 0  # in the kernel, no reactor turn needed
    received = bytearray()
    read_up_to(peer, received, len(small))

    websocket_protocol.write_now(transport, large)  # more than the kernel takes
    queued = pending_bytes(transport)
    assert 0 < queued < len(large)
    websocket_protocol.write_now(transport, after)  # waits behind, in order
    assert pending_bytes(transport) == queued + len(after)

    data = small + large + after
    drain(transport, peer, received, len(data))
    assert bytes(received) == data


# --- the cut-off rule ------------------------------------------------------------------


@pytest.fixture
def behind(monkeypatch):
    """A protocol over the limit, a settable clock, and the cuts it made."""
    clock = [1000.0]
    monkeypatch.setattr(websocket_protocol.time, "monotonic", lambda: clock[0])
    protocol = ChatWebSocketProtocol()
    protocol.state = protocol.STATE_OPEN
    protocol._behind = None
    cuts = []
    protocol._cut_off = cuts.append
    return protocol, clock, cuts


def test_a_backlog_that_does_not_go_down_within_the_window_is_cut(behind):
    protocol, clock, cuts = behind
    protocol._over_limit(100_000)
    clock[0] += websocket_protocol.SLOW_READER_WINDOW_SECONDS - 0.1
    protocol._over_limit(400_000)
    assert cuts == []
    clock[0] += 0.1
    protocol._over_limit(400_000)
    assert cuts == [400_000]


def test_a_reader_working_down_a_burst_is_not_cut(behind):
    """A resume's replay comes in one go: the reader gets windows while it shrinks."""
    protocol, clock, cuts = behind
    window = websocket_protocol.SLOW_READER_WINDOW_SECONDS
    for pending in (4_000_000, 3_000_000, 2_000_000, 1_500_000):
        protocol._over_limit(pending)
        clock[0] += window
    assert cuts == []
    protocol._over_limit(1_500_000)  # no progress over a whole window
    assert cuts == [1_500_000]


# --- through a real server -------------------------------------------------------------


class RawClient:
    """A WebSocket client on a plain blocking socket: it reads only when told to."""

    def __init__(self, port: int, *, rcvbuf: int):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws/v1/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, frame: dict) -> None:
        payload = json.dumps(frame).encode()
        if len(payload) < 126:
            header = bytes([0x81, 0x80 | len(payload)])
        else:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def frame(self) -> tuple[int, bytes]:
        """The next frame: (opcode, payload)."""
        while (parsed := self._parse()) is None:
            self._fill()
        return parsed

    def expect(self, kind: str) -> dict:
        while True:
            opcode, payload = self.frame()
            if opcode == 0x1 and (text := json.loads(payload))["type"] == kind:
                return text

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError
        self.buffer += chunk

    def _parse(self) -> tuple[int, bytes] | None:
        buffer = self.buffer
        if len(buffer) < 2:
            return None
        opcode, length, at = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
        if length == 126:
            if len(buffer) < 4:
                return None
            (length,), at = struct.unpack_from("!H", buffer, 2), 4
        elif length == 127:
            if len(buffer) < 10:
                return None
            (length,), at = struct.unpack_from("!Q", buffer, 2), 10
        if len(buffer) < at + length:
            return None
        self.buffer = buffer[at + length :]
        return opcode, buffer[at : at + length]


def read_to_the_end(client: RawClient) -> dict:
    """Read what waited for the stalled client: its text frames, then the close frame
    (or a reset, when the server already dropped the connection); then, without
    answering the close, how long until the server drops the connection."""
    texts, close, reset, dropped_after = [], None, False, None
    try:
        while close is None:
            opcode, payload = client.frame()
            if opcode == 0x1:
                texts.append(json.loads(payload))
            elif opcode == 0x8:
                close = (struct.unpack("!H", payload[:2])[0], payload[2:].decode())
        closed_at = time.monotonic()
        try:
            while client.sock.recv(1 << 16):
                pass
        except ConnectionResetError:
            pass
        dropped_after = time.monotonic() - closed_at
    except (ConnectionResetError, EOFError):
        reset = True
    finally:
        client.sock.close()
    return {"texts": texts, "close": close, "reset": reset, "dropped_after": dropped_after}


@pytest.fixture
def start_server(transactional_db, redis_url, aws, tmp_path):
    yield from multiprocess.servers(redis_url=redis_url, aws=aws, tmp_path=tmp_path)


def cut_off_lines(server) -> list[dict]:
    lines = server.log_path.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if "slow reader cut off" in line]


@pytest.mark.integration
async def test_a_stalled_reader_is_cut_off_and_resumes_with_nothing_missing(start_server, world):
    issued, room = world.acme, world.room.connection_id  # acme: 50 messages/s
    limit = 65536
    server = start_server(
        CHAT_SLOW_READER_BYTES=limit,
        CHAT_OVERLOAD_LAG_MS=0,  # a busy test machine must not refuse the sends
        CHAT_WEB_WORKERS=1,
        CHAT_DRAIN_SECONDS=1,
    )
    ada = await Peer.open(server, factories.token_for(issued, user_id="ada"), room)

    def stall():
        client = RawClient(server.port, rcvbuf=4096)
        client.send({"type": "auth", "token": factories.token_for(issued, user_id="bob")})
        client.expect("ready")
        client.send({"type": "join", "connection_id": room})
        return client, client.expect("joined")

    bob, joined = await asyncio.to_thread(stall)  # then bob reads nothing

    sent_at, echoed, acked, errors = {}, {}, {}, []

    async def listen():
        async for text in ada.socket:
            frame, now = json.loads(text), time.monotonic()
            if frame["type"] == "message":
                echoed[frame["body"][:5]] = now
            elif frame["type"] == "ack":
                acked[frame["client_id"]] = now
            elif frame["type"] == "error":
                errors.append(frame)

    listener = asyncio.create_task(listen())
    reading, cut_at, started = None, None, time.monotonic()
    n = 0
    # 12 KB frames (3-byte characters) at 40/s: the kernel's buffers fill first (a few
    # MB on loopback), then Twisted's passes the limit and the 5 s window runs.
    while time.monotonic() - started < 45 and (cut_at is None or time.monotonic() < cut_at + 1):
        marker = f"{n:05d}"
        body = marker + "€" * 3990
        frame = {"type": "send", "connection_id": room, "client_id": marker, "body": body}
        await ada.socket.send(json.dumps(frame, ensure_ascii=False))
        sent_at[marker] = time.monotonic()
        n += 1
        await asyncio.sleep(0.025)
        if cut_at is None and cut_off_lines(server):
            cut_at = time.monotonic()
            reading = asyncio.create_task(asyncio.to_thread(read_to_the_end, bob))
    assert cut_at is not None, "no cut-off within 45 s"

    # The room was not slowed: the sender's own messages came back promptly, and
    # every one was acknowledged.
    async with asyncio.timeout(30):
        while len(acked) + len(errors) < n or len(echoed) < n:
            await asyncio.sleep(0.1)
    listener.cancel()
    assert errors == []
    lateness = max(echoed[marker] - sent_at[marker] for marker in sent_at)
    assert lateness < 1.5, lateness

    [line] = cut_off_lines(server)
    assert line["level"] == "WARNING" and line["user_id"] == "bob", line
    assert str(line["tenant_id"]) == str(issued.tenant.id) and line["pending_bytes"] > limit

    seen = await reading
    assert seen["close"] is not None or seen["reset"], seen
    if seen["close"] is not None:
        code, reason = seen["close"]
        assert code == 1013 and reason.startswith("slow reader: "), seen["close"]
        assert seen["dropped_after"] < 5, seen["dropped_after"]  # the close is not answered
    read = [frame for frame in seen["texts"] if frame["type"] == "message"]
    assert [m["seq"] for m in read] == list(range(joined["seq"] + 1, joined["seq"] + 1 + len(read)))

    # Resume from the last message bob read: the replay fills everything in, in order.
    since = read[-1]["seq"] if read else joined["seq"]
    bob_again = await Peer.open(server, factories.token_for(issued, user_id="bob"))
    await bob_again.send(
        {"type": "join", "connection_id": room, "since": since, "epoch": joined["epoch"]}
    )
    replayed = []
    async with asyncio.timeout(10):
        while (frame := json.loads(await bob_again.socket.recv()))["type"] != "joined":
            if frame["type"] == "message":
                replayed.append(frame)
    assert frame["recovered"] is True
    assert [m["seq"] for m in replayed] == list(range(since + 1, frame["seq"] + 1))
    assert {m["body"][:5] for m in read + replayed} == set(sent_at)
    # A replay bigger than the limit, read as it comes, is not cut off.
    await bob_again.send({"type": "ping"})
    await bob_again.expect("pong")
    await bob_again.close()
    await ada.close()
