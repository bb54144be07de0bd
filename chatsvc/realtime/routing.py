from channels.routing import URLRouter
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.urls import path

from chatsvc.realtime.consumer import ChatConsumer


class AllowedHosts:
    """ALLOWED_HOSTS for the WebSocket handshake too: another Host is refused (HTTP 403)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if not _host_allowed(scope):
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 4403})
            return
        await self.app(scope, receive, send)


def _host_allowed(scope) -> bool:
    host = dict(scope.get("headers", [])).get(b"host", b"").decode("latin-1")
    domain, _ = split_domain_port(host)
    return bool(domain) and validate_host(domain, settings.ALLOWED_HOSTS)


# No session/auth middleware: sockets authenticate with their first frame, and
# origins are checked per tenant once the tenant is known.
websocket_application = AllowedHosts(URLRouter([path("ws/v1/", ChatConsumer.as_asgi())]))
