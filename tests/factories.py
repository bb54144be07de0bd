"""Test data made through the real services (nothing written behind their back)."""

from chatsvc.realtime import tokens
from chatsvc.rooms.services import open_room
from chatsvc.tenants.selectors import signing_secret_for
from chatsvc.tenants.services import create_tenant


def tenant_with_key(slug="acme", **fields):
    issued = create_tenant(slug=slug, name=slug.title(), origins=fields.pop("origins", ()))
    if fields:
        for name, value in fields.items():
            setattr(issued.tenant, name, value)
        issued.tenant.save()
    return issued


def room_for(issued, title="Room"):
    return open_room(tenant=issued.tenant, title=title)


def token_for(issued, *, user_id="u1", name="Ada", rooms=("*",), role="member", ttl=3600):
    token, _ = tokens.mint(
        key=issued.key,
        signing_secret=signing_secret_for(key=issued.key),
        user_id=user_id,
        name=name,
        connection_ids=list(rooms),
        role=role,
        ttl_seconds=ttl,
    )
    return token
