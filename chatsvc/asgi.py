"""ASGI entry point: health probes, then HTTP (Django) or WebSocket (Channels)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsvc.settings")
django_application = get_asgi_application()  # sets Django up before the imports below

from channels.routing import ProtocolTypeRouter  # noqa: E402

from chatsvc.core.health import HealthProbes  # noqa: E402
from chatsvc.core.startup import assert_safe_for_production  # noqa: E402
from chatsvc.realtime.routing import websocket_application  # noqa: E402

assert_safe_for_production()

application = HealthProbes(
    ProtocolTypeRouter({"http": django_application, "websocket": websocket_application})
)
