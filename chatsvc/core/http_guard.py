"""A deadline for each connection's request headers, installed by `manage.py serve`.

Twisted's HTTP channel resets its idle timer on every byte, so a client that
sends one header line every few seconds (slowloris) holds a connection and
its memory for as long as it likes. Here every connection must finish its
first request's headers within CHAT_HEADER_TIMEOUT_SECONDS of connecting, or
it is cut. The load balancer has its own limits; the service does not rely on
them.
"""

from daphne import server as daphne_server
from daphne.http_protocol import HTTPFactory
from twisted.internet import reactor


class HeaderDeadlineFactory(HTTPFactory):
    header_timeout = 10.0

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        channel = getattr(protocol, "_channel", protocol)  # HTTP/1.1 inside the negotiator
        deadline = reactor.callLater(self.header_timeout, _cut, channel)
        headers_received = channel.allHeadersReceived

        def all_headers_received():
            if deadline.active():
                deadline.cancel()
            headers_received()

        channel.allHeadersReceived = all_headers_received
        return protocol


def _cut(channel) -> None:
    transport = getattr(channel, "transport", None)
    if transport is not None:
        transport.abortConnection()


def install(header_timeout: float) -> None:
    HeaderDeadlineFactory.header_timeout = header_timeout
    daphne_server.HTTPFactory = HeaderDeadlineFactory
