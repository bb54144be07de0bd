"""Three changes to daphne's WebSocket protocol, installed by `manage.py serve`.

1. Close codes: Autobahn lets applications send only 1000 and 3000-4999, but
   RFC 6455 (7.4.1) has servers send 1009 (message too big) and 1012 (service
   restart, IANA registry) themselves; protocol v1 promises both.
2. Close reasons: daphne drops the ASGI close message's `reason`; it is passed on.
3. Fan-out: the RoomHub hands the same pre-encoded text object to every
   member socket. Server frames are unmasked, so the frame bytes are the same
   for every recipient: build them once and write them to each transport,
   instead of re-encoding and re-framing per socket in Autobahn (measured:
   the largest per-delivery cost; docs/performance.md).
4. Slow readers: Twisted buffers whatever the peer does not read, without
   limit. A socket whose unsent bytes stay above CHAT_SLOW_READER_BYTES
   without going down for SLOW_READER_WINDOW_SECONDS is closed with 1013 and
   gets no more frames; it resumes with `join {since, epoch}` (docs/protocol.md).
5. Intake lag: how long incoming frames wait for the application, told to the
   overload monitor (chatsvc.realtime.overload).
6. Writes: Twisted's `write` only buffers; the socket is registered for
   writing, written on a later reactor turn and unregistered again, for every
   frame: a third of a delivery's cost (measured: docs/performance.md). A frame
   with nothing queued before it goes to the socket at once (`write_now`), and
   the hub writes through `direct_writer`, past daphne's per-message coroutine.
"""

import logging
import math
import struct
import time

import autobahn.websocket.protocol as autobahn_protocol
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from django.conf import settings
from twisted.internet.abstract import FileDescriptor

from chatsvc.realtime import overload

logger = logging.getLogger(__name__)

SERVER_CLOSE_CODES = frozenset({1009, 1011, 1012, 1013})
OPCODE_TEXT_FIN = 0x81
CLOSE_SLOW_READER = 1013  # try again later: reconnect and resume with `since`
# Over the limit, a reader gets this long to work its backlog down. A resume's
# replay is written in one go, so a client cut off for being N bytes behind comes
# back to a burst of at least N bytes: cutting it at once would cut it forever.
SLOW_READER_WINDOW_SECONDS = 5.0
# The peer is not reading, so it may never answer the close frame: the
# connection (and its buffer) is dropped this long after it was sent.
SLOW_READER_ABORT_SECONDS = 2.0


def pending_bytes(transport: FileDescriptor) -> int:
    """Bytes written to a Twisted socket transport that the kernel has not taken yet.

    Twisted's internals (abstract.FileDescriptor): `dataBuffer` from `offset`
    on is being sent, `_tempDataBuffer` (`_tempDataLen` bytes) waits behind it.
    tests/realtime/test_slow_reader.py checks this on a real socket.
    """
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def _nothing_pending(transport) -> int:
    return 0


def text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented WebSocket text frame (RFC 6455 5.2)."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", OPCODE_TEXT_FIN, length)
    elif length < 65536:
        header = struct.pack("!BBH", OPCODE_TEXT_FIN, 126, length)
    else:
        header = struct.pack("!BBQ", OPCODE_TEXT_FIN, 127, length)
    return header + payload


def write_now(transport, data: bytes) -> None:
    """Send `data` to the socket at once if nothing is queued before it; Twisted
    queues what the kernel does not take (and notices a lost connection)."""
    if (
        transport.connected
        and not transport.disconnecting
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    ):
        sent = transport.writeSomeData(data)
        if sent == len(data):
            return
        if isinstance(sent, int):
            data = data[sent:]
    transport.write(data)


def _buffered_write(transport, data: bytes) -> None:
    transport.write(data)


def direct_writer(send):
    """Write text frames straight to the socket behind `send` when `send` is daphne's
    reply callable for one of our protocols (the server runs `install`); else None."""
    protocol = (getattr(send, "args", None) or (None,))[0]
    return protocol.serverSend if isinstance(protocol, ChatWebSocketProtocol) else None


class _LastFrame:
    """One-entry cache: the frame of the text object sent last in this process."""

    text: str | None = None
    frame: bytes = b""

    @classmethod
    def of(cls, text: str) -> bytes:
        if text is not cls.text:
            cls.text, cls.frame = text, text_frame(text.encode("utf8"))
        return cls.frame


class ChatWebSocketProtocol(WebSocketProtocol):
    slow_reader_bytes: float = math.inf  # install() sets CHAT_SLOW_READER_BYTES

    def _connectionMade(self):
        super()._connectionMade()
        # A frame above the hard cap gets the closing handshake with 1009, like
        # every other oversized frame, instead of a dropped TCP connection
        # (1006 for the client, and no reason it can act on).
        self.failByDrop = False
        # (when, pending bytes) at the start of the current window over the limit
        self._behind: tuple[float, int] | None = None
        # Only a plain socket transport's buffer can be read and written past
        # (TLS wraps it).
        is_socket = isinstance(self.transport, FileDescriptor)
        self._pending = pending_bytes if is_socket else _nothing_pending
        plain_socket = is_socket and getattr(self.transport, "TLS", True) is False
        self._write = write_now if plain_socket else _buffered_write
        self._arrivals: list[float] = []  # of the frames the application has not taken yet

    def onMessage(self, payload, isBinary):
        # A socket's frames reach its consumer one at a time, a loop turn or two
        # each (Channels' dispatch). A sender faster than that queues here, and its
        # frames wait without the loop itself lagging: the lecture's lone sender past
        # capacity (docs/performance.md). Counted only while the application takes
        # frames: one stuck on a slow call (history, auth) is not the process's lag.
        now = time.monotonic()
        waiting = self.application_queue.qsize()
        arrivals = self._arrivals
        taken = len(arrivals) - waiting  # since the last frame
        if taken > 0:
            del arrivals[:taken]
            if arrivals:
                overload.monitor().note_intake(now - arrivals[0])
        arrivals.append(now)
        super().onMessage(payload, isBinary)

    def handle_reply(self, message):
        # daphne drops the ASGI close `reason`; protocol v1 promises it (it says
        # which auth check failed, which limit was hit, ...).
        if message.get("type") == "websocket.close" and self.state != self.STATE_CONNECTING:
            self.serverClose(code=message.get("code"), reason=message.get("reason"))
        else:
            super().handle_reply(message)

    def serverClose(self, code=None, reason=None):
        # A close reason is at most 123 bytes of UTF-8 (RFC 6455 5.5: 125 with the code).
        reason_utf8 = reason.encode()[:123] if reason else None
        if code in SERVER_CLOSE_CODES and self.state == self.STATE_OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=reason_utf8, isReply=False)
        elif reason_utf8:
            code = 1000 if code is None else code
            self.sendClose(code=code, reason=reason_utf8.decode(errors="ignore"))
        else:
            super().serverClose(code=code)

    def serverSend(self, content, binary=False):
        plain = (
            not binary
            and self.state == self.STATE_OPEN
            and self.send_state == self.SEND_STATE_GROUND
            and self._perMessageCompress is None
            and not self.autoFragmentSize
        )
        transport = self.transport
        if plain:
            self._write(transport, _LastFrame.of(content))
        elif self.state == self.STATE_CLOSING or self.state == self.STATE_CLOSED:
            # Autobahn raises on a closing socket, and the fan-out must go on to
            # the other members (a slow reader being cut off, a peer that left).
            return
        else:
            super().serverSend(content, binary)
        # A few attribute reads per write: this runs once per delivery.
        if (pending := self._pending(transport)) > self.slow_reader_bytes:
            self._over_limit(pending)
        elif self._behind is not None:
            self._behind = None

    def _over_limit(self, pending: int) -> None:
        """Cut the socket off once a window passed without its backlog going down."""
        now = time.monotonic()
        if self._behind is None:
            self._behind = (now, pending)
        elif now - self._behind[0] >= SLOW_READER_WINDOW_SECONDS:
            if pending < self._behind[1]:  # reading, behind a burst (a replay): one more window
                self._behind = (now, pending)
            elif self.state == self.STATE_OPEN:
                self._cut_off(pending)

    def _cut_off(self, pending: int) -> None:
        reason = f"slow reader: {pending} bytes unread"
        logger.warning(
            "slow reader cut off",
            extra={
                "client": "{}:{}".format(*self.client_addr) if self.client_addr else None,
                "pending_bytes": pending,
                "limit_bytes": self.slow_reader_bytes,
                **_member_of(self),
            },
        )
        # Autobahn drops the connection (abortConnection: the buffer goes) when
        # the closing handshake is not answered within this timeout.
        self.closeHandshakeTimeout = SLOW_READER_ABORT_SECONDS
        self.sendCloseFrame(code=CLOSE_SLOW_READER, reasonUtf8=reason.encode(), isReply=False)


def _member_of(protocol) -> dict:
    """Who the socket belongs to, for the log: its consumer's send is bound to `protocol`."""
    from chatsvc.realtime.consumer import _live

    for consumer in list(_live):
        bound = getattr(consumer.base_send, "args", ())  # daphne: partial(handle_reply, protocol)
        if bound and bound[0] is protocol:
            user = consumer.user
            return {
                "socket_id": consumer.socket_id,
                "user_id": user.id if user else None,
                "tenant_id": user.tenant.id if user else None,
            }
    return {}


def _unformatted(value) -> str:
    return "(not formatted: chatsvc.core.websocket_protocol)"


def install() -> None:
    # Autobahn pretty-prints its whole configuration for a debug line on every new
    # connection, logged or not: 3 % of a reconnect storm's CPU (bench/fanout.py).
    autobahn_protocol.pformat = _unformatted
    limit = settings.CHAT_SLOW_READER_BYTES
    ChatWebSocketProtocol.slow_reader_bytes = limit if limit > 0 else math.inf
    WebSocketFactory.protocol = ChatWebSocketProtocol
