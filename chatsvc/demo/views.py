"""A page where two browser tabs can chat (local mode only: DEBUG)."""

import secrets
from urllib.parse import urlsplit

from django.conf import settings
from django.shortcuts import render

from chatsvc.core.security_headers import CONTENT_SECURITY_POLICY
from chatsvc.demo.setup import ensure_demo
from chatsvc.realtime import tokens
from chatsvc.tenants.selectors import current_signing_key

# Where the page reaches the attachments bucket: uploads (fetch: connect-src) and
# thumbnails (img-src).
STORAGE_DIRECTIVES = ("connect-src", "img-src")


def policy(storage_endpoint: str | None) -> str:
    """The service's Content-Security-Policy, plus the storage emulator's origin for
    uploads and thumbnails when there is one (local mode: moto on loopback). Without
    an endpoint (real S3) the policy is the service's, unchanged."""
    if not storage_endpoint:
        return CONTENT_SECURITY_POLICY
    parts = urlsplit(storage_endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return CONTENT_SECURITY_POLICY
    origin = f"{parts.scheme}://{parts.netloc}"
    directives = []
    for directive in CONTENT_SECURITY_POLICY.split("; "):
        if directive.split(" ", 1)[0] in STORAGE_DIRECTIVES:
            directive = f"{directive} {origin}"
        directives.append(directive)
    return "; ".join(directives)


def demo(request):
    """`?name=Ada` picks the name; `?moderator=1` mints a moderator token. The demo is
    served in local mode only (chatsvc/urls.py: DEBUG), where anyone at the keyboard
    runs the service anyway: letting them be a moderator of the demo room gives nothing
    away, and shows the moderator's Delete and Mute."""
    tenant, room, _ = ensure_demo()
    key, secret = current_signing_key(tenant=tenant)
    user_id = f"demo-{secrets.token_hex(4)}"
    name = request.GET.get("name", "")[:40] or user_id
    moderator = request.GET.get("moderator") in ("1", "on", "true")
    token, _ = tokens.mint(
        key=key,
        signing_secret=secret,
        user_id=user_id,
        name=name,
        connection_ids=[room.connection_id],
        role="moderator" if moderator else "member",
        ttl_seconds=3600,
    )
    context = {
        "token": token,
        "connection_id": room.connection_id,
        "name": name,
        "moderator": moderator,
        "chosen_name": request.GET.get("name", "")[:40],
    }
    response = render(request, "demo/chat.html", context)
    # The page uploads attachments straight to the bucket and shows their thumbnails:
    # in local mode that is the emulator, on another origin (the middleware keeps this).
    response["Content-Security-Policy"] = policy(settings.AWS_ENDPOINT_URL)
    return response
