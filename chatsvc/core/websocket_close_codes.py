"""Let the application close WebSockets with 1009 and 1012 under daphne.

Autobahn lets applications send only 1000 and 3000-4999, but RFC 6455 (7.4.1)
has servers send 1009 (message too big) and 1012 (service restart, from the
IANA registry) themselves; protocol v1 promises both. `install()` swaps in a
daphne protocol that sends those two as plain close frames.
"""

from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol

SERVER_CLOSE_CODES = frozenset({1009, 1011, 1012, 1013})


class ChatWebSocketProtocol(WebSocketProtocol):
    def serverClose(self, code=None):
        if code in SERVER_CLOSE_CODES and self.state == self.STATE_OPEN:
            self.sendCloseFrame(code=code, isReply=False)
        else:
            super().serverClose(code=code)


def install() -> None:
    WebSocketFactory.protocol = ChatWebSocketProtocol
