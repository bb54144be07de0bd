"""A page where two browser tabs can chat (local mode only: DEBUG)."""

import secrets

from django.shortcuts import render

from chatsvc.demo.setup import ensure_demo
from chatsvc.realtime import tokens
from chatsvc.tenants.selectors import current_signing_key


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
    return render(request, "demo/chat.html", context)
