from channels.routing import URLRouter
from django.urls import path

from chatsvc.realtime.consumer import ChatConsumer

# No session/auth middleware: sockets authenticate with their first frame, and
# origins are checked per tenant once the tenant is known.
websocket_application = URLRouter([path("ws/v1/", ChatConsumer.as_asgi())])
