"""Attachments against moto's S3 server over real HTTP.

moto stores a presigned POST's upload without evaluating its policy; S3 does.
`s3_enforces_post_policies` adds that evaluation to the in-process moto server
as AWS documents it (signature, expiration, every condition, every field
covered), so a test can see S3 refuse what our policy forbids.
"""

import base64
import datetime
import hashlib
import hmac
import json
import time
from types import SimpleNamespace

import pytest
import requests
from channels.db import database_sync_to_async
from moto.s3.responses import S3Response

from chatsvc.realtime.tokens import ChatUser
from tests import factories

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
    b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81"
    b"\x84\x00\x00\x00\x00IEND\xaeB`\x82"
)
PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"


def keys_in(bucket) -> list[str]:
    listing = bucket.s3.list_objects_v2(Bucket=bucket.name)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def user(issued, user_id="u1", rooms=None) -> ChatUser:
    return ChatUser(
        id=user_id,
        name=user_id.title(),
        role="member",
        tenant=issued.tenant,
        rooms=None if rooms is None else frozenset(rooms),
        expires_at=int(time.time()) + 3600,
        key_id=issued.key.key_id,
    )


@pytest.fixture
def world(db):
    """Two tenants, two rooms of the first, one of the second."""
    acme = factories.tenant_with_key("acme")
    other = factories.tenant_with_key("other")
    return SimpleNamespace(
        acme=acme,
        other=other,
        room=factories.room_for(acme).connection_id,
        room2=factories.room_for(acme, title="Second").connection_id,
        other_room=factories.room_for(other).connection_id,
    )


def post_upload(grant: dict, data: bytes, filename="file.bin", content_type=None):
    """The browser's multipart/form-data POST: the fields, then the file last."""
    fields = grant["fields"]
    file_type = content_type or fields.get("Content-Type", "application/octet-stream")
    return requests.post(
        grant["url"], data=fields, files={"file": (filename, data, file_type)}, timeout=10
    )


aio = database_sync_to_async


# ---------------------------------------------------------------- S3's POST policy


def _signing_key(secret: str, date: str, region: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def evaluate_post_policy(form: dict, body: bytes, bucket: str, secret: str) -> str | None:
    """Why S3 refuses this browser POST, or None (AWS: "Creating a POST policy")."""
    policy_b64 = form.get("policy")
    if not policy_b64:
        return "AccessDenied: no policy"
    credential = form.get("x-amz-credential", "")
    _, date, region, _, _ = credential.split("/")
    expected = hmac.new(
        _signing_key(secret, date, region), policy_b64.encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, form.get("x-amz-signature", "")):
        return "SignatureDoesNotMatch"
    policy = json.loads(base64.b64decode(policy_b64))
    expiration = datetime.datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
    if expiration < datetime.datetime.now(datetime.UTC):
        return "AccessDenied: policy expired"
    values = {name.lower(): value for name, value in form.items()}
    values["bucket"] = bucket
    covered = {"bucket"}
    for condition in policy["conditions"]:
        if isinstance(condition, dict):
            ((name, value),) = condition.items()
            condition = ["eq", "$" + name, value]
        operator, *args = condition
        if operator == "content-length-range":
            low, high = args
            if not low <= len(body) <= high:
                return "EntityTooLarge" if len(body) > high else "EntityTooSmall"
            continue
        field, value = args[0].lstrip("$").lower(), args[1]
        covered.add(field)
        actual = values.get(field)
        if operator == "eq" and actual != value:
            return f"AccessDenied: {field} must be {value!r}"
        if operator == "starts-with" and not (actual or "").startswith(value):
            return f"AccessDenied: {field} must start with {value!r}"
    exempt = {"policy", "x-amz-signature", "file"}
    extra = {f for f in values if f not in covered | exempt and not f.startswith("x-ignore-")}
    if extra:
        return f"AccessDenied: fields not in the policy: {sorted(extra)}"
    return None


@pytest.fixture
def s3_enforces_post_policies(monkeypatch):
    original = S3Response._bucket_response_post

    def enforcing(self, request, bucket_name):
        form = {name: self.form_data[name] for name in self.form_data}
        if "policy" in form or "x-amz-signature" in form:
            refusal = evaluate_post_policy(form, self.body, bucket_name, "testing")
            if refusal:
                code = refusal.split(":")[0]
                status = 400 if code.startswith("Entity") else 403
                return status, {}, f"<Error><Code>{code}</Code><Message>{refusal}</Message></Error>"
        return original(self, request, bucket_name)

    monkeypatch.setattr(S3Response, "_bucket_response_post", enforcing)
