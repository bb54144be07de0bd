"""REST API v1 through Django's test client, with real SQLite/PostgreSQL."""

import json
import os
import subprocess
import sys

import jwt
import pytest
from django.contrib.staticfiles import finders

from chatsvc.core.ulid import is_ulid, new_ulid
from chatsvc.realtime import tokens
from chatsvc.settings import BASE_DIR
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme():
    return factories.tenant_with_key("acme")


@pytest.fixture
def api(client, acme):
    def call(method, path, body=None, key=None):
        headers = {"Authorization": f"Bearer {key or acme.api_key}"}
        return getattr(client, method)(
            f"/api/v1{path}", body, content_type="application/json", headers=headers
        )

    return call


def test_create_get_and_close_a_connection(api):
    created = api("post", "/connections", {"title": "Algebra 101", "metadata": {"course": 7}})
    assert created.status_code == 201
    body = created.json()
    assert is_ulid(body["connection_id"])
    assert body["title"] == "Algebra 101" and body["status"] == "open"
    assert body["metadata"] == {"course": 7} and body["created_at"]

    fetched = api("get", f"/connections/{body['connection_id']}")
    assert fetched.status_code == 200 and fetched.json()["title"] == "Algebra 101"

    closed = api("post", f"/connections/{body['connection_id']}/close")
    assert closed.status_code == 200 and closed.json()["status"] == "closed"
    assert closed.json()["closed_at"]


@pytest.mark.parametrize("key", ["", "csk_nope_nope", "garbage", None])
def test_bad_api_keys_are_401(client, key):
    headers = {} if key is None else {"Authorization": f"Bearer {key}"}
    response = client.post(
        "/api/v1/connections", {}, content_type="application/json", headers=headers
    )
    assert response.status_code == 401
    assert response.json() == {
        "error": {"code": "unauthorized", "message": "missing or invalid API key"}
    }


def test_revoked_key_and_inactive_tenant_are_401(api, acme):
    from chatsvc.tenants.services import revoke_key, rotate_key, set_active

    newer = rotate_key(tenant=acme.tenant)
    assert api("post", "/connections", {}).status_code == 201  # both keys work during rotation
    assert api("post", "/connections", {}, key=newer.api_key).status_code == 201
    revoke_key(key=acme.key)
    assert api("post", "/connections", {}).status_code == 401
    set_active(tenant=acme.tenant, active=False)
    assert api("post", "/connections", {}, key=newer.api_key).status_code == 401


def test_another_tenants_room_is_404_like_a_missing_one(api):
    other = factories.tenant_with_key("other")
    foreign = factories.room_for(other)
    for connection_id in (foreign.connection_id, new_ulid(), "not-a-ulid"):
        for method, path in (
            ("get", f"/connections/{connection_id}"),
            ("post", f"/connections/{connection_id}/close"),
            ("get", f"/connections/{connection_id}/messages"),
        ):
            response = api(method, path)
            assert response.status_code == 404, (method, path)
            assert response.json()["error"]["code"] == "not_found"
    foreign.refresh_from_db()
    assert foreign.is_open


def test_bad_bodies_are_422_with_field_details(api):
    response = api("post", "/tokens", {"user_id": "", "connection_ids": [], "ttl_seconds": 999999})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    fields = {tuple(d["loc"]) for d in error["details"]}
    assert {("body", "user_id"), ("body", "connection_ids"), ("body", "ttl_seconds")} <= fields

    response = api("post", "/connections", {"title": "x" * 201})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == ["body", "title"]

    response = api("post", "/connections", {"metadata": {"blob": "x" * 5000}})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == ["body", "metadata"]


@pytest.mark.parametrize(
    ("method", "path", "body", "loc"),
    [
        ("post", "/connections", {"metadata": "x"}, ["body", "metadata"]),
        ("post", "/tokens", {"user_id": "u", "connection_ids": [7]}, ["body", "connection_ids", 0]),
        ("post", "/tokens", {"connection_ids": ["*"]}, ["body", "user_id"]),
        ("get", "/connections?limit=x", None, ["query", "limit"]),
        ("get", "/connections?metadata=a:b&metadata=nocolon", None, ["query", "metadata", 1]),
    ],
)
def test_error_locations_name_what_the_client_sent_never_view_parameters(
    api, method, path, body, loc
):
    """Not ["body", "payload", ...] or ["query", "query", ...]: those are the views' names."""
    response = api(method, path, body)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == loc


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/connections", {"title": "nul\u0000"}, "title"),
        ("/connections", {"metadata": {"course": ["ok", "nul\u0000"]}}, "metadata"),
        ("/connections", {"metadata": {"key\u0000": 1}}, "metadata"),
        ("/tokens", {"user_id": "u\ud800", "connection_ids": ["*"]}, "user_id"),
        ("/tokens", {"user_id": "u1", "name": "bell\u0007", "connection_ids": ["*"]}, "name"),
    ],
    ids=["title-nul", "metadata-nul", "metadata-key-nul", "user-surrogate", "name-bell"],
)
def test_text_no_store_accepts_is_a_422_not_a_500(client, acme, path, body, field):
    """NUL reaches PostgreSQL as a 500; control characters and surrogates break SQS."""
    response = client.post(
        f"/api/v1{path}",
        json.dumps(body),  # ensure_ascii: sent as the escapes \u0000, \ud800, \u0007
        content_type="application/json",
        headers={"Authorization": f"Bearer {acme.api_key}"},
    )
    assert response.status_code == 422, response.content
    assert response.json()["error"]["details"][0]["loc"][-1] == field


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("post", "/connections", "[]", 422, "invalid_request"),
        ("post", "/connections", '["title"]', 422, "invalid_request"),
        ("post", "/connections", "{not json", 400, "http_error"),
        ("post", "/connections", '{"title": "' + "x" * 70_000 + '"}', 413, "too_large"),
        ("get", "/no-such-endpoint", None, 404, "not_found"),
        ("get", "/", None, 404, "not_found"),
        ("get", "/connections/01JD7X3K9Q4W6E2R8T5Y1V3N0P/nope", None, 404, "not_found"),
        ("put", "/connections", "{}", 405, "method_not_allowed"),
        ("delete", "/tokens", None, 405, "method_not_allowed"),
        ("get", "/connections/01JD7X3K9Q4W6E2R8T5Y1V3N0P/close", None, 405, "method_not_allowed"),
    ],
    ids=[
        "array",
        "array-of-strings",
        "bad-json",
        "too-large",
        "unknown-path",
        "api-root",
        "unknown-subpath",
        "wrong-method",
        "wrong-method-tokens",
        "wrong-method-close",
    ],
)
def test_every_api_failure_has_the_json_error_shape(api, method, path, body, status, code, caplog):
    response = api(method, path, body)
    assert response.status_code == status
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == code
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    if status == 405:  # which methods the path has
        assert set(response["Allow"].split(", ")) in ({"GET", "POST"}, {"POST"})


def test_a_form_body_is_a_json_400(client, acme):
    response = client.post(
        "/api/v1/connections",
        "title=x",
        content_type="application/x-www-form-urlencoded",
        headers={"Authorization": f"Bearer {acme.api_key}"},
    )
    assert response.status_code == 400 and response.json()["error"]["code"]


def test_minted_tokens_verify_and_carry_the_claims(api, acme):
    room = factories.room_for(acme)
    response = api(
        "post",
        "/tokens",
        {
            "user_id": "u7",
            "name": "Grace",
            "connection_ids": [room.connection_id],
            "ttl_seconds": 600,
        },
    )
    assert response.status_code == 200
    token = response.json()["token"]
    assert jwt.get_unverified_header(token)["kid"] == acme.key.key_id
    user = tokens.authenticate(token)
    assert (user.id, user.name, user.role, user.tenant.pk) == (
        "u7",
        "Grace",
        "member",
        acme.tenant.pk,
    )
    assert user.may_join(room.connection_id) and not user.may_join(new_ulid())
    claims = jwt.decode(token, acme.signing_secret, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 600


def test_tokens_only_for_the_tenants_own_rooms(api):
    foreign = factories.room_for(factories.tenant_with_key("other"))
    response = api("post", "/tokens", {"user_id": "u", "connection_ids": [foreign.connection_id]})
    assert response.status_code == 422
    assert foreign.connection_id in response.json()["error"]["details"][0]["msg"]
    wildcard = api("post", "/tokens", {"user_id": "u", "connection_ids": ["*"]})
    assert wildcard.status_code == 200


def test_history_items_carry_their_seq_when_they_have_one(api, acme, monkeypatch):
    room = factories.room_for(acme)
    message = {
        "connection_id": room.connection_id,
        "id": new_ulid(),
        "sender": {"id": "u7", "name": "Grace"},
        "body": "hello",
        "ts": "2026-11-26T10:00:01.123Z",
    }
    older = {**message, "id": new_ulid()}
    page = [{**message, "seq": 42}, older]  # `older` was stored before rooms had sequences
    monkeypatch.setattr(
        "chatsvc.api.views.read_history_blocking", lambda **kwargs: (page, older["id"])
    )
    response = api("get", f"/connections/{room.connection_id}/messages")
    assert response.status_code == 200
    assert response.json() == {"messages": page, "next": older["id"]}


def test_history_query_is_validated(api, acme):
    room = factories.room_for(acme)
    for query in ("limit=0", "limit=101", "before=nope"):
        response = api("get", f"/connections/{room.connection_id}/messages?{query}")
        assert response.status_code == 422, query


def test_openapi_document_describes_the_api(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["info"]["title"] == "chatsvc"
    assert {
        "/api/v1/connections",
        "/api/v1/connections/{connection_id}",
        "/api/v1/connections/{connection_id}/close",
        "/api/v1/connections/{connection_id}/messages",
        "/api/v1/tokens",
    } <= set(spec["paths"])
    schemes = spec["components"]["securitySchemes"].values()
    assert [scheme["scheme"] for scheme in schemes] == ["bearer"]


def test_tokens_need_a_decryptable_signing_key(api, settings):
    settings.SECRET_KEY = "rotated-without-fallbacks-" + "x" * 40
    response = api("post", "/tokens", {"user_id": "u", "connection_ids": ["*"]})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_signing_key"


def test_api_docs_are_served_without_a_cdn_under_a_csp(client):
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    html = response.content.decode()
    assert "/static/ninja/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower() and "//" not in html.replace("http://www.w3.org", "")
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert finders.find("ninja/swagger-ui-bundle.js")  # collected into the image


def test_api_docs_can_be_turned_off():
    probe = (
        "import django; django.setup(); from django.test import Client; c = Client(); "
        "print(c.get('/api/v1/docs', HTTP_HOST='localhost').status_code, "
        "c.get('/api/v1/openapi.json', HTTP_HOST='localhost').status_code)"
    )
    env = {**os.environ, "CHAT_API_DOCS": "false", "DJANGO_SETTINGS_MODULE": "chatsvc.settings"}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=BASE_DIR, env=env, capture_output=True, text=True
    )
    assert result.stdout.split() == ["404", "200"], result.stderr
