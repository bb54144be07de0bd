"""The upload flow end to end against moto's S3 over HTTP: request, presigned
POST, claim (verified bytes), download URL, deletion, clean-up."""

import asyncio
import base64
import json
from datetime import timedelta
from io import StringIO
from urllib.parse import quote

import pytest
import requests
from django.core.management import call_command
from django.utils import timezone

from chatsvc.attachments import services
from chatsvc.attachments.models import Attachment
from chatsvc.attachments.services import AttachmentError
from chatsvc.tenants.models import Tenant
from tests.attachments.conftest import PDF, PNG, aio, keys_in, post_upload, user

pytestmark = pytest.mark.django_db(transaction=True)


async def upload(who, room, data, *, name="pic.png", content_type="image/png", size=None):
    grant = await services.request_upload(
        who, room, name=name, content_type=content_type, size=len(data) if size is None else size
    )
    response = post_upload(grant, data, filename=name)
    return grant, response


async def refused(code, call):
    with pytest.raises(AttachmentError) as caught:
        await call
    assert caught.value.code == code, caught.value.message
    assert caught.value.message
    return caught.value


async def test_presigned_upload_then_claim_returns_metadata(
    bucket, world, s3_enforces_post_policies
):
    ada = user(world.acme)
    grant, response = await upload(ada, world.room, PNG, name="Café photo.png")
    assert response.status_code == 204, response.text
    assert set(grant) == {"id", "url", "fields", "expires_at", "max_bytes"}
    assert grant["max_bytes"] == world.acme.tenant.attachment_max_bytes
    key = f"tenants/{world.acme.tenant.id}/rooms/{world.room}/{grant['id']}/Cafe_photo.png"
    assert keys_in(bucket) == [key]
    head = bucket.s3.head_object(Bucket=bucket.name, Key=key)
    assert head["ContentType"] == "image/png" and head["ContentLength"] == len(PNG)

    attached = await services.claim(ada, world.room, [grant["id"]], ref="msg-1")
    assert attached == [
        {
            "id": grant["id"],
            "name": "Café photo.png",
            "content_type": "image/png",
            "size": len(PNG),
            "key": key.replace(grant["id"] + "/", grant["id"] + "/sent/"),
        }
    ]
    # The checked bytes are served from a copy; the upload itself is gone.
    assert keys_in(bucket) == [attached[0]["key"]]
    row = await aio(Attachment.objects.get)(pk=grant["id"])
    assert (row.status, row.ref, row.detected_type) == ("attached", "msg-1", "image/png")
    assert row.attached_at is not None


async def test_policy_pins_key_type_and_exact_size(bucket, world):
    grant = await services.request_upload(
        user(world.acme), world.room, name="a.pdf", content_type="application/pdf", size=123
    )
    policy = json.loads(base64.b64decode(grant["fields"]["policy"]))
    conditions = policy["conditions"]
    assert ["content-length-range", 123, 123] in conditions
    assert {"Content-Type": "application/pdf"} in conditions
    assert {"bucket": bucket.name} in conditions
    row = await aio(Attachment.objects.get)(pk=grant["id"])
    assert {"key": row.key} in conditions and grant["fields"]["key"] == row.key


async def test_s3_refuses_another_size_and_claim_says_not_uploaded(
    bucket, world, s3_enforces_post_policies
):
    ada = user(world.acme)
    grant = await services.request_upload(
        ada, world.room, name="pic.png", content_type="image/png", size=len(PNG)
    )
    for data in (PNG + b"extra", PNG[:-1]):
        response = post_upload(grant, data)
        assert response.status_code == 400 and "Entity" in response.text
    # ... nor another type or key than the policy names.
    assert post_upload(grant, PNG, content_type="text/html").status_code == 204  # the field wins
    other = {**grant, "fields": {**grant["fields"], "Content-Type": "text/html"}}
    assert post_upload(other, PNG).status_code == 403
    moved = {**grant, "fields": {**grant["fields"], "key": grant["fields"]["key"] + "x"}}
    assert post_upload(moved, PNG).status_code == 403
    assert len(keys_in(bucket)) == 1  # only the one with the right field and size

    second = await services.request_upload(
        ada, world.room, name="b.png", content_type="image/png", size=len(PNG)
    )
    await refused(
        "attachment_not_uploaded", services.claim(ada, world.room, [second["id"]], ref="m")
    )
    assert (await aio(Attachment.objects.get)(pk=second["id"])).status == "pending"


async def test_claim_rejects_a_stored_size_other_than_declared(bucket, world):
    """Should anything put other bytes at the key (not through the policy)."""
    ada = user(world.acme)
    grant = await services.request_upload(
        ada, world.room, name="pic.png", content_type="image/png", size=len(PNG) + 10
    )
    row = await aio(Attachment.objects.get)(pk=grant["id"])
    bucket.s3.put_object(Bucket=bucket.name, Key=row.key, Body=PNG, ContentType="image/png")
    await refused("attachment_rejected", services.claim(ada, world.room, [row.id], ref="m"))
    assert (await aio(Attachment.objects.get)(pk=row.id)).status == "rejected"
    assert keys_in(bucket) == []


async def test_png_declared_as_pdf_is_rejected_and_its_object_deleted(bucket, world):
    ada = user(world.acme)
    grant, response = await upload(
        ada, world.room, PNG, name="report.pdf", content_type="application/pdf"
    )
    assert response.status_code == 204
    assert len(keys_in(bucket)) == 1
    error = await refused(
        "attachment_rejected", services.claim(ada, world.room, [grant["id"]], ref="m")
    )
    assert "image/png" in error.message and "application/pdf" in error.message
    assert keys_in(bucket) == []
    row = await aio(Attachment.objects.get)(pk=grant["id"])
    assert row.status == "rejected" and row.ref is None
    # Asking again gives the same answer, without S3.
    await refused("attachment_rejected", services.claim(ada, world.room, [grant["id"]], ref="m"))


async def test_one_bad_file_attaches_none(bucket, world):
    ada = user(world.acme)
    good, _ = await upload(ada, world.room, PDF, name="a.pdf", content_type="application/pdf")
    bad, _ = await upload(
        ada, world.room, b"\x00\x01binary", name="b.txt", content_type="text/plain"
    )
    await refused(
        "attachment_rejected", services.claim(ada, world.room, [good["id"], bad["id"]], ref="m")
    )
    assert (await aio(Attachment.objects.get)(pk=good["id"])).status == "pending"
    # The good one can still go with a message of its own.
    (meta,) = await services.claim(ada, world.room, [good["id"]], ref="m2")
    assert meta["content_type"] == "application/pdf"


async def test_text_plain_is_utf8_without_nul(bucket, world):
    ada = user(world.acme)
    text = "héllo wörld, 你好\n".encode() * 1000  # past the sniffing window, cut mid-character
    grant, response = await upload(
        ada, world.room, text, name="notes.txt", content_type="text/plain"
    )
    assert response.status_code == 204
    (meta,) = await services.claim(ada, world.room, [grant["id"]], ref="m")
    assert meta["content_type"] == "text/plain"
    latin1, _ = await upload(
        ada, world.room, "café".encode("latin-1"), name="l.txt", content_type="text/plain"
    )
    await refused("attachment_rejected", services.claim(ada, world.room, [latin1["id"]], ref="m3"))


async def test_requests_the_tenant_does_not_allow_are_refused(bucket, world, settings):
    ada = user(world.acme)

    def ask(**overrides):
        args = {"name": "a.png", "content_type": "image/png", "size": 10, **overrides}
        return services.request_upload(ada, world.room, **args)

    await refused("attachment_type_not_allowed", ask(content_type="application/x-msdownload"))
    await refused("attachment_type_not_allowed", ask(content_type="image/svg+xml"))
    limit = world.acme.tenant.attachment_max_bytes
    await refused("attachment_too_large", ask(size=limit + 1))
    for size in (0, -1, "10", 1.5, True):
        await refused("bad_attachment", ask(size=size))
    for name in ("", "x" * 256, "a\x00b", "line\nbreak", "\u200b ", 7):
        await refused("bad_attachment", ask(name=name))
    await refused("bad_attachment", ask(content_type="png"))
    # Rooms: another tenant's, unknown, or not in the token.
    await refused(
        "bad_attachment",
        services.request_upload(
            ada, world.other_room, name="a.png", content_type="image/png", size=10
        ),
    )
    limited = user(world.acme, rooms=[world.room2])
    await refused(
        "bad_attachment",
        services.request_upload(
            limited, world.room, name="a.png", content_type="image/png", size=10
        ),
    )
    assert await aio(Attachment.objects.count)() == 0
    # Aliases and parameters are folded: image/jpg is image/jpeg.
    granted = await ask(content_type="IMAGE/JPG")
    assert granted["fields"]["Content-Type"] == "image/jpeg"

    # The tenant as the admin has it now, not the token's (older) copy.
    tenants = Tenant.objects.filter(pk=world.acme.tenant.id)
    await aio(tenants.update)(attachment_max_bytes=0)
    assert ada.tenant.attachment_max_bytes > 0
    await refused("attachments_disabled", ask())
    await aio(tenants.update)(attachment_max_bytes=1000, attachment_types="")
    await refused("attachments_disabled", ask())


async def test_a_type_the_tenant_stopped_allowing_is_rejected_at_send(bucket, world):
    ada = user(world.acme)
    grant, _ = await upload(ada, world.room, PDF, name="a.pdf", content_type="application/pdf")
    await aio(Tenant.objects.filter(pk=world.acme.tenant.id).update)(attachment_types="image/png")
    await refused("attachment_rejected", services.claim(ada, world.room, [grant["id"]], ref="m"))
    assert keys_in(bucket) == []


async def test_pending_uploads_per_user_are_capped(bucket, world, settings):
    settings.CHAT_ATTACHMENT_MAX_PENDING = 2
    ada, bob = user(world.acme), user(world.acme, "bob")

    def ask(who):
        return services.request_upload(
            who, world.room, name="a.png", content_type="image/png", size=10
        )

    first, _ = await upload(ada, world.room, PNG)
    await ask(ada)
    await refused("too_many_uploads", ask(ada))
    await ask(bob)  # a quota per user
    await services.claim(ada, world.room, [first["id"]], ref="m")  # sent: no longer pending
    await ask(ada)
    await refused("too_many_uploads", ask(ada))


async def test_only_the_uploader_in_its_room_and_tenant_may_claim(bucket, world):
    ada = user(world.acme)
    grant, _ = await upload(ada, world.room, PNG)
    ids = [grant["id"]]
    for who, room in (
        (user(world.acme, "bob"), world.room),  # another user
        (ada, world.room2),  # another room
        (user(world.other, "u1"), world.other_room),  # another tenant, same user id
        (user(world.other, "u1"), world.room),
    ):
        await refused("attachment_not_found", services.claim(who, room, ids, ref="m"))
    await refused(
        "attachment_not_found", services.claim(ada, world.room, ["01" + "0" * 24], ref="m")
    )
    for bad in ([], ["nope"], ids * 2, [grant["id"]] * 11, "x"):
        await refused("bad_attachment", services.claim(ada, world.room, bad, ref="m"))
    await refused("bad_attachment", services.claim(ada, world.room, ids, ref=""))
    assert (await aio(Attachment.objects.get)(pk=grant["id"])).status == "pending"
    assert len(keys_in(bucket)) == 1


async def test_claim_again_with_the_same_ref_is_a_resend_another_ref_is_refused(bucket, world):
    ada = user(world.acme)
    first, _ = await upload(ada, world.room, PNG)
    second, _ = await upload(ada, world.room, PDF, name="b.pdf", content_type="application/pdf")
    ids = [second["id"], first["id"]]
    attached = await services.claim(ada, world.room, ids, ref="msg-1")
    assert [a["id"] for a in attached] == ids  # the order given
    assert [a["content_type"] for a in attached] == ["application/pdf", "image/png"]
    assert await services.claim(ada, world.room, ids, ref="msg-1") == attached
    await refused("attachment_in_use", services.claim(ada, world.room, ids, ref="msg-2"))
    await refused("attachment_in_use", services.claim(ada, world.room, [first["id"]], ref="msg-2"))
    row = await aio(Attachment.objects.get)(pk=first["id"])
    assert row.ref == "msg-1"


async def test_download_url_serves_the_bytes_under_the_original_name(bucket, world, settings):
    settings.CHAT_ATTACHMENT_URL_SECONDS = 120
    ada = user(world.acme)
    name = 'Résumé "final".pdf'
    grant, _ = await upload(ada, world.room, PDF, name=name, content_type="application/pdf")
    attached = await services.claim(ada, world.room, [grant["id"]], ref="m")
    before = int(__import__("time").time())
    (shown,) = services.with_download_urls(attached)
    assert "key" not in shown
    assert {k: shown[k] for k in ("id", "name", "content_type", "size")} == {
        k: attached[0][k] for k in ("id", "name", "content_type", "size")
    }
    assert before + 120 <= shown["url_expires_at"] <= before + 122
    assert "X-Amz-Signature=" in shown["url"] and "X-Amz-Expires=120" in shown["url"]
    response = await asyncio.to_thread(requests.get, shown["url"], timeout=10)
    assert response.status_code == 200 and response.content == PDF
    disposition = response.headers["Content-Disposition"]
    assert disposition == (
        "attachment; filename=\"Resume _final_.pdf\"; filename*=UTF-8''"
        + quote(name, safe="!#$&+-.^_`|~")
    )
    assert response.headers["Content-Type"] == "application/pdf"
    # A tampered URL (another key) is refused.
    tampered = shown["url"].replace(grant["id"], "0" * 26)
    assert (await asyncio.to_thread(requests.get, tampered, timeout=10)).status_code in (
        403,
        404,
    )


async def test_uploading_again_after_the_claim_changes_nothing_served(bucket, world):
    """The presigned POST stays valid after the message is sent: what it uploads
    then is never what the message's link serves."""
    ada = user(world.acme)
    grant, _ = await upload(ada, world.room, PNG)
    attached = await services.claim(ada, world.room, [grant["id"]], ref="m")
    swapped = PNG[:-12] + b"\x00" * 12  # same size, other bytes
    assert post_upload(grant, swapped, filename="pic.png").status_code == 204
    (shown,) = services.with_download_urls(attached)
    response = await asyncio.to_thread(requests.get, shown["url"], timeout=10)
    assert response.content == PNG
    # Deleting the message deletes the late upload too.
    await aio(services.delete_objects)(
        tenant_id=world.acme.tenant.id, connection_id=world.room, ids=[grant["id"]]
    )
    assert keys_in(bucket) == []


async def test_delete_objects_removes_objects_and_marks_rows(bucket, world):
    ada = user(world.acme)
    first, _ = await upload(ada, world.room, PNG)
    second, _ = await upload(ada, world.room, PDF, name="b.pdf", content_type="application/pdf")
    kept, _ = await upload(ada, world.room, PNG, name="kept.png")
    ids = [first["id"], second["id"]]
    await services.claim(ada, world.room, ids, ref="m")
    delete = aio(services.delete_objects)
    # Another tenant's or room's ids do nothing.
    await delete(tenant_id=world.other.tenant.id, connection_id=world.room, ids=ids)
    await delete(tenant_id=world.acme.tenant.id, connection_id=world.room2, ids=ids)
    assert len(keys_in(bucket)) == 3
    for _ in range(2):  # idempotent
        await delete(tenant_id=world.acme.tenant.id, connection_id=world.room, ids=[*ids, "junk"])
        assert [k.split("/")[4] for k in keys_in(bucket)] == [kept["id"]]
    statuses = await aio(lambda: dict(Attachment.objects.values_list("id", "status")))()
    assert statuses == {first["id"]: "deleted", second["id"]: "deleted", kept["id"]: "pending"}
    await refused("attachment_not_found", services.claim(ada, world.room, ids, ref="m"))


async def test_deleting_a_room_deletes_its_objects(bucket, world):
    ada = user(world.acme)
    await upload(ada, world.room, PNG)
    other, _ = await upload(ada, world.room2, PNG)
    from chatsvc.rooms.models import Room

    await aio(lambda: Room.objects.filter(pk=world.room).delete())()
    assert [k.split("/")[4] for k in keys_in(bucket)] == [other["id"]]


def test_clean_attachments_removes_stale_pending_and_expired(bucket, world, settings):
    from asgiref.sync import async_to_sync

    ada = user(world.acme)
    stale, _ = async_to_sync(upload)(ada, world.room, PNG, name="stale.png")
    fresh, _ = async_to_sync(upload)(ada, world.room, PNG, name="fresh.png")
    old, _ = async_to_sync(upload)(ada, world.room, PNG, name="old.png")
    recent, _ = async_to_sync(upload)(ada, world.room, PNG, name="recent.png")
    async_to_sync(services.claim)(ada, world.room, [old["id"], recent["id"]], ref="m")
    now = timezone.now()
    Attachment.objects.filter(pk=stale["id"]).update(created_at=now - timedelta(hours=25))
    world.acme.tenant.retention_days = 30
    world.acme.tenant.save()
    Attachment.objects.filter(pk=old["id"]).update(attached_at=now - timedelta(days=31))
    # An expired pending upload cannot be sent any more.
    with pytest.raises(AttachmentError) as caught:
        async_to_sync(services.claim)(ada, world.room, [stale["id"]], ref="late")
    assert caught.value.code == "attachment_not_found"

    out = StringIO()
    call_command("clean_attachments", stdout=out)
    assert json.loads(out.getvalue()) == {"stale_pending": 1, "past_retention": 1, "rows_purged": 0}
    assert sorted(k.split("/")[4] for k in keys_in(bucket)) == sorted([fresh["id"], recent["id"]])
    statuses = dict(Attachment.objects.values_list("id", "status"))
    assert statuses == {
        stale["id"]: "deleted",
        fresh["id"]: "pending",
        old["id"]: "deleted",
        recent["id"]: "attached",
    }
    # Long-deleted rows are purged; a second run finds nothing else.
    Attachment.objects.filter(pk=stale["id"]).update(created_at=now - timedelta(days=40))
    out = StringIO()
    call_command("clean_attachments", stdout=out)
    assert json.loads(out.getvalue()) == {"stale_pending": 0, "past_retention": 0, "rows_purged": 1}
    assert not Attachment.objects.filter(pk=stale["id"]).exists()
