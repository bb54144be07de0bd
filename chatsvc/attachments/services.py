"""Attachments: presigned uploads to S3, verification when a message claims them,
download URLs, deletion. The protocol frames call these (docs/attachments.md).

Everything in S3 goes through django-storages' "attachments" storage (settings.
STORAGES): its bucket, its boto3 connection (region, endpoint, signature v4,
addressing style) presign the POSTs and GETs and make the few calls we need.
Database work runs in database_sync_to_async; S3 calls run in worker threads
(asyncio.to_thread), never in the thread that serializes database access.
"""

import asyncio
import logging
import time
from datetime import timedelta

from botocore.exceptions import BotoCoreError, ClientError
from channels.db import database_sync_to_async
from django.conf import settings
from django.core.files.storage import storages
from django.db import transaction
from django.utils import timezone

from chatsvc.attachments import content
from chatsvc.attachments.models import Attachment
from chatsvc.core.ulid import is_ulid, new_ulid
from chatsvc.realtime.tokens import ChatUser
from chatsvc.rooms.models import Room
from chatsvc.tenants.models import Tenant

logger = logging.getLogger(__name__)

STORAGE_ALIAS = "attachments"
MAX_IDS_PER_MESSAGE = 10
MAX_REF_CHARS = 200
DELETE_BATCH = 1000  # S3 DeleteObjects' limit


class AttachmentError(Exception):
    """A refusal the client can act on: `code` (stable, snake_case) and `message`."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def storage():
    """The django-storages S3 storage that holds attachments."""
    return storages[STORAGE_ALIAS]


def _client():
    return storage().bucket.meta.client


def _bucket_name() -> str:
    return storage().bucket_name


# --------------------------------------------------------------------------- upload


async def request_upload(
    user: ChatUser, connection_id: str, *, name: str, content_type: str, size: int
) -> dict:
    """Grant one upload: a presigned POST for exactly this key, type and size.

    Returns {"id", "url", "fields", "expires_at", "max_bytes"}; the client POSTs
    `fields` plus its `file` (last) as multipart/form-data to `url`.
    """
    tenant = await _current_tenant(user)
    max_bytes = tenant.attachment_max_bytes
    allowed = {content.normalize_type(t) for t in tenant.allowed_attachment_types}
    if max_bytes <= 0 or not allowed:
        raise AttachmentError("attachments_disabled", "attachments are disabled for this tenant")
    try:
        name = content.check_name(name)
    except content.BadName as exc:
        raise AttachmentError("bad_attachment", str(exc)) from exc
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise AttachmentError("bad_attachment", "size must be a positive integer (bytes)")
    if size > max_bytes:
        raise AttachmentError(
            "attachment_too_large", f"the file is {size} bytes; the limit is {max_bytes} bytes"
        )
    if not isinstance(content_type, str) or not content.is_content_type(
        content.normalize_type(content_type)
    ):
        raise AttachmentError("bad_attachment", "type must be a content type, e.g. image/png")
    declared = content.normalize_type(content_type)
    if declared not in allowed:
        raise AttachmentError(
            "attachment_type_not_allowed",
            f"{declared} is not allowed here; allowed: {', '.join(sorted(allowed))}",
        )
    attachment = await _create_pending(user, connection_id, name=name, declared=declared, size=size)
    seconds = settings.CHAT_ATTACHMENT_UPLOAD_SECONDS
    expires_at = int(time.time()) + seconds
    post = await asyncio.to_thread(_presigned_post, attachment, seconds)
    return {
        "id": attachment.id,
        "url": post["url"],
        "fields": post["fields"],
        "expires_at": expires_at,
        "max_bytes": max_bytes,
    }


@database_sync_to_async
def _current_tenant(user: ChatUser) -> Tenant:
    """The tenant's limits as the admin left them (the token's copy may be older)."""
    return Tenant.objects.get(pk=user.tenant.id)


@database_sync_to_async
def _create_pending(user: ChatUser, connection_id: str, *, name, declared, size) -> Attachment:
    room = Room.objects.filter(connection_id=connection_id, tenant_id=user.tenant.id).first()
    if room is None or not user.may_join(connection_id):
        raise AttachmentError("bad_attachment", "not a room of yours")
    if not room.is_open:
        raise AttachmentError("bad_attachment", "the room is closed")
    since = _pending_cutoff()
    with transaction.atomic():
        # One user's requests queue here, so the quota cannot be overrun by a burst.
        list(Room.objects.select_for_update().filter(pk=room.pk).values_list("pk", flat=True))
        pending = Attachment.objects.filter(
            tenant_id=user.tenant.id,
            user_id=user.id,
            status=Attachment.Status.PENDING,
            created_at__gte=since,
        ).count()
        limit = settings.CHAT_ATTACHMENT_MAX_PENDING
        if pending >= limit:
            raise AttachmentError(
                "too_many_uploads",
                f"{limit} uploads are waiting to be sent already: send or let them expire first",
            )
        attachment_id = new_ulid()
        return Attachment.objects.create(
            id=attachment_id,
            tenant_id=user.tenant.id,
            room=room,
            user_id=user.id,
            name=name,
            declared_type=declared,
            size=size,
            key=content.object_key(
                tenant_id=user.tenant.id,
                connection_id=connection_id,
                attachment_id=attachment_id,
                name=name,
            ),
        )


def _presigned_post(attachment: Attachment, seconds: int) -> dict:
    # boto3 adds the bucket and the exact key to the policy itself.
    return _client().generate_presigned_post(
        Bucket=_bucket_name(),
        Key=attachment.key,
        Fields={"Content-Type": attachment.declared_type},
        Conditions=[
            {"Content-Type": attachment.declared_type},
            ["content-length-range", attachment.size, attachment.size],
        ],
        ExpiresIn=seconds,
    )


# --------------------------------------------------------------------------- claim


async def claim(user: ChatUser, connection_id: str, ids: list[str], *, ref: str) -> list[dict]:
    """Attach uploaded files to the message `ref`; their metadata, in the order given.

    Each id must be this user's upload in this room, uploaded in full, and its
    bytes of an allowed type that matches the declared one (else it is rejected
    and its object deleted). All or nothing: on any refusal none is attached.
    The same ref again returns the same result; another ref is attachment_in_use.
    """
    if not isinstance(ref, str) or not 0 < len(ref) <= MAX_REF_CHARS:
        raise AttachmentError("bad_attachment", "ref must be a string of 1 to 200 characters")
    if (
        not isinstance(ids, list)
        or not 1 <= len(ids) <= MAX_IDS_PER_MESSAGE
        or not all(is_ulid(i) for i in ids)
    ):
        raise AttachmentError(
            "bad_attachment", f"attachments must be a list of 1 to {MAX_IDS_PER_MESSAGE} ids"
        )
    if len(set(ids)) != len(ids):
        raise AttachmentError("bad_attachment", "an attachment is listed twice")
    rows = await _claimable(user, connection_id, ids, ref)
    to_verify = [row for row in rows.values() if row.status == Attachment.Status.PENDING]
    tenant = await _current_tenant(user)
    allowed = {content.normalize_type(t) for t in tenant.allowed_attachment_types}
    detected = await asyncio.gather(
        *(asyncio.to_thread(_verify, row, allowed) for row in to_verify)
    )
    refusals = []
    for row, verdict in zip(to_verify, detected, strict=True):
        if isinstance(verdict, AttachmentError):
            if verdict.code == "attachment_rejected":
                await _reject(row)
            refusals.append(verdict)
    if refusals:
        raise refusals[0]
    found = dict(zip((row.id for row in to_verify), detected, strict=True))
    attached = await _attach(user, connection_id, ids, ref, found)
    # The checked copies are served; the uploads themselves can go.
    await asyncio.to_thread(delete_keys_quietly, [row.key for row in to_verify])
    return [metadata(attached[i]) for i in ids]


@database_sync_to_async
def _claimable(user: ChatUser, connection_id: str, ids: list[str], ref: str) -> dict:
    rows = {
        row.id: row
        for row in Attachment.objects.filter(
            id__in=ids, tenant_id=user.tenant.id, room_id=connection_id, user_id=user.id
        )
    }
    for attachment_id in ids:
        row = rows.get(attachment_id)
        if row is None or row.status == Attachment.Status.DELETED:
            raise AttachmentError("attachment_not_found", f"no attachment {attachment_id} here")
        _check_state(row, ref)
    return rows


def _check_state(row: Attachment, ref: str) -> None:
    if row.status == Attachment.Status.REJECTED:
        raise AttachmentError(
            "attachment_rejected",
            f"{row.id}: its content is not the declared {row.declared_type}; upload it again",
        )
    if row.status == Attachment.Status.DELETED:
        raise AttachmentError("attachment_not_found", f"no attachment {row.id} here")
    if row.status == Attachment.Status.ATTACHED and row.ref != ref:
        raise AttachmentError("attachment_in_use", f"{row.id} belongs to another message")
    if row.status == Attachment.Status.PENDING and row.created_at < _pending_cutoff():
        # clean_attachments deletes these: never attach one it may be deleting.
        raise AttachmentError("attachment_not_found", f"{row.id} expired before it was sent")


def _pending_cutoff():
    return timezone.now() - timedelta(seconds=settings.CHAT_ATTACHMENT_PENDING_SECONDS)


def _verify(row: Attachment, allowed: set[str]) -> str | AttachmentError:
    """Read the object's first bytes: its detected type, or why it is refused."""
    try:
        response = _client().get_object(
            Bucket=_bucket_name(), Key=row.key, Range=f"bytes=0-{content.SNIFF_BYTES - 1}"
        )
        head = response["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "InvalidRange"}:
            return AttachmentError(
                "attachment_not_uploaded", f"{row.id} has not been uploaded (or not completely)"
            )
        raise
    content_range = response.get("ContentRange") or ""
    total = int(content_range.rsplit("/", 1)[1]) if "/" in content_range else len(head)
    if total != row.size:
        logger.warning(
            "attachment size mismatch",
            extra={"attachment": row.id, "declared": row.size, "stored": total},
        )
        return AttachmentError(
            "attachment_rejected", f"{row.id}: {total} bytes stored, {row.size} declared"
        )
    detected = content.detect(head, declared=row.declared_type, complete=total <= len(head))
    if detected == row.declared_type and detected not in allowed:
        return AttachmentError(
            "attachment_rejected", f"{row.id}: {detected} is no longer allowed here"
        )
    if detected != row.declared_type:
        logger.warning(
            "attachment content rejected",
            extra={"attachment": row.id, "declared": row.declared_type, "detected": detected},
        )
        return AttachmentError(
            "attachment_rejected",
            f"{row.id}: the content is {detected or 'of an unknown type'}, "
            f"not the declared {row.declared_type}",
        )
    # The upload's presigned POST stays valid for a while: serve a copy of exactly
    # the bytes checked (the ETag pins them), never what is at the upload key later.
    try:
        _client().copy_object(
            Bucket=_bucket_name(),
            Key=sent_key(row.key),
            CopySource={"Bucket": _bucket_name(), "Key": row.key},
            CopySourceIfMatch=response["ETag"],
            MetadataDirective="COPY",
        )
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in {"PreconditionFailed", "412"}:
            return AttachmentError(
                "attachment_rejected", f"{row.id} changed while it was checked; upload it again"
            )
        raise
    return detected


async def _reject(row: Attachment) -> None:
    await database_sync_to_async(
        Attachment.objects.filter(pk=row.pk, status=Attachment.Status.PENDING).update
    )(status=Attachment.Status.REJECTED)
    await asyncio.to_thread(_delete_keys, [row.key])


@database_sync_to_async
def _attach(user: ChatUser, connection_id: str, ids, ref, detected: dict) -> dict:
    now = timezone.now()
    with transaction.atomic():
        rows = {
            row.id: row
            for row in Attachment.objects.select_for_update().filter(
                id__in=ids, tenant_id=user.tenant.id, room_id=connection_id, user_id=user.id
            )
        }
        for attachment_id in ids:  # again, under the lock: a concurrent claim may have won
            row = rows.get(attachment_id)
            if row is None:
                raise AttachmentError("attachment_not_found", f"no attachment {attachment_id} here")
            _check_state(row, ref)
            if row.status == Attachment.Status.PENDING:
                row.status = Attachment.Status.ATTACHED
                row.ref = ref
                row.attached_at = now
                row.detected_type = detected.get(row.id) or row.declared_type
                row.key = sent_key(row.key)
                row.save(update_fields=["status", "ref", "attached_at", "detected_type", "key"])
    return rows


SENT = "sent"  # attached files live under <upload key's folder>/sent/<name>


def sent_key(upload_key: str) -> str:
    """Where an upload's checked copy is served from."""
    folder, name = upload_key.rsplit("/", 1)
    return f"{folder}/{SENT}/{name}"


def _with_uploads(keys: list[str]) -> list[str]:
    """The keys and, for sent copies, their upload keys (a late re-upload may sit there)."""
    found = []
    for key in keys:
        found.append(key)
        parts = key.split("/")
        if len(parts) > 2 and parts[-2] == SENT:
            found.append("/".join([*parts[:-2], parts[-1]]))
    return found


def metadata(row: Attachment) -> dict:
    """What a message carries. `key` stays on the server: with_download_urls drops it."""
    return {
        "id": row.id,
        "name": row.name,
        "content_type": row.detected_type or row.declared_type,
        "size": row.size,
        "key": row.key,
    }


# --------------------------------------------------------------------------- download


def with_download_urls(attachments: list[dict]) -> list[dict]:
    """The attachments as clients see them: no `key`, plus a short-lived `url`
    (presigned GET that downloads under the original name) and `url_expires_at`.

    Presigning is local (no network); the URL is signed with the service's
    credentials and works until url_expires_at (epoch seconds).
    """
    seconds = settings.CHAT_ATTACHMENT_URL_SECONDS
    expires_at = int(time.time()) + seconds
    client = _client()
    bucket = _bucket_name()
    shown = []
    for item in attachments:
        public = {k: v for k, v in item.items() if k != "key"}
        key = item.get("key")
        if key:
            public["url"] = client.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": bucket,
                    "Key": key,
                    "ResponseContentDisposition": content.content_disposition(item["name"]),
                    "ResponseContentType": content.served_type(item["content_type"]),
                },
                ExpiresIn=seconds,
            )
            public["url_expires_at"] = expires_at
        shown.append(public)
    return shown


# --------------------------------------------------------------------------- deletion


def delete_objects(*, tenant_id: str, connection_id: str, ids: list[str]) -> None:
    """A message was deleted: its attachments' rows are marked deleted and their
    objects deleted. Idempotent; ids that are not this room's are ignored.
    Synchronous (the worker)."""
    ids = [i for i in ids if is_ulid(i)]
    if not ids:
        return
    rows = list(
        Attachment.objects.filter(id__in=ids, tenant_id=tenant_id, room_id=connection_id).exclude(
            status=Attachment.Status.DELETED
        )
    )
    if not rows:
        return
    _delete_keys([row.key for row in rows])
    Attachment.objects.filter(pk__in=[row.pk for row in rows]).update(
        status=Attachment.Status.DELETED
    )


def _delete_keys(keys: list[str]) -> None:
    """Delete objects (missing ones are fine), sent copies with their uploads;
    raise if S3 refuses any."""
    keys = _with_uploads(keys)
    client, bucket = _client(), _bucket_name()
    for start in range(0, len(keys), DELETE_BATCH):
        batch = keys[start : start + DELETE_BATCH]
        response = client.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
        )
        if errors := response.get("Errors"):
            raise RuntimeError(f"S3 refused to delete {len(errors)} objects: {errors[:3]}")


def delete_keys_quietly(keys: list[str]) -> None:
    """Best effort (rows already gone): log instead of raising."""
    if not keys:
        return
    try:
        _delete_keys(keys)
    except (BotoCoreError, ClientError, RuntimeError) as exc:
        logger.warning(
            "attachment objects not deleted", extra={"keys": keys[:10], "error": str(exc)}
        )
