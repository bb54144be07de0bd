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
"""

import struct

from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol

SERVER_CLOSE_CODES = frozenset({1009, 1011, 1012, 1013})
OPCODE_TEXT_FIN = 0x81


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
    def _connectionMade(self):
        super()._connectionMade()
        # A frame above the hard cap gets the closing handshake with 1009, like
        # every other oversized frame, instead of a dropped TCP connection
        # (1006 for the client, and no reason it can act on).
        self.failByDrop = False

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
        if plain:
            self.transport.write(_LastFrame.of(content))
        else:
            super().serverSend(content, binary)


def install() -> None:
    WebSocketFactory.protocol = ChatWebSocketProtocol
