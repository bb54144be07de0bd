"""Operators see attachments in the admin and change nothing there."""

import pytest
from django.contrib.auth.models import User

from chatsvc.attachments.models import Attachment

pytestmark = pytest.mark.django_db


def test_admin_lists_attachments_read_only(client, world):
    row = Attachment.objects.create(
        tenant=world.acme.tenant,
        room_id=world.room,
        user_id="u1",
        name="report.pdf",
        declared_type="application/pdf",
        size=10,
        key="tenants/t/rooms/r/a/report.pdf",
    )
    admin = User.objects.create_superuser("ops", "ops@example.com", "pw-ops-123456")
    client.force_login(admin)
    listing = client.get("/admin/attachments/attachment/", secure=True)
    assert listing.status_code == 200 and b"report.pdf" in listing.content
    assert client.get("/admin/attachments/attachment/add/", secure=True).status_code == 403
    detail = client.get(f"/admin/attachments/attachment/{row.pk}/change/", secure=True)
    assert detail.status_code == 200 and b'name="_save"' not in detail.content
    delete = client.post(f"/admin/attachments/attachment/{row.pk}/delete/", secure=True)
    assert delete.status_code == 403 and Attachment.objects.filter(pk=row.pk).exists()
