"""A page where two browser tabs can chat (local mode only: DEBUG)."""

import secrets

from django.shortcuts import render

from chatsvc.demo.setup import ensure_demo
from chatsvc.realtime import tokens
from chatsvc.tenants.selectors import current_signing_key


def demo(request):
    tenant, room, _ = ensure_demo()
    key, secret = current_signing_key(tenant=tenant)
    user_id = f"demo-{secrets.token_hex(4)}"
    name = request.GET.get("name", "")[:40] or user_id
    token, _ = tokens.mint(
        key=key,
        signing_secret=secret,
        user_id=user_id,
        name=name,
        connection_ids=[room.connection_id],
        ttl_seconds=3600,
    )
    context = {"token": token, "connection_id": room.connection_id, "name": name}
    return render(request, "demo/chat.html", context)
