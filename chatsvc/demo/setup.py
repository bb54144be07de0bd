"""The demo tenant and room that local mode provides."""

from chatsvc.rooms.models import Room
from chatsvc.rooms.services import open_room
from chatsvc.tenants import services
from chatsvc.tenants.models import Tenant

DEMO_SLUG = "demo"
DEMO_ROOM_TITLE = "Demo room"


def ensure_demo(*, reissue_key: bool = False):
    """Create the demo tenant and room if missing; return (tenant, room, issued key or None)."""
    tenant = Tenant.objects.filter(slug=DEMO_SLUG).first()
    issued = None
    if tenant is None:
        issued = services.create_tenant(slug=DEMO_SLUG, name="Demo LMS")
        tenant = issued.tenant
    elif reissue_key:
        issued = services.rotate_key(tenant=tenant, revoke_others=True)
    room = Room.objects.filter(
        tenant=tenant, title=DEMO_ROOM_TITLE, status=Room.Status.OPEN
    ).first()
    if room is None:
        room = open_room(tenant=tenant, title=DEMO_ROOM_TITLE)
    return tenant, room, issued
