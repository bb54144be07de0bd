"""REST: members, removals and revocations through Django's test client, with
the real database and the real presence store (Redis when REDIS_URL is set)."""

import time
from datetime import datetime

import jwt
import pytest

from chatsvc.core.ulid import new_ulid
from chatsvc.realtime import tokens
from chatsvc.rooms.models import RoomRemoval, UserRevocation
from chatsvc.tenants.selectors import signing_secret_for
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def acme():
    return factories.tenant_with_key("acme")


@pytest.fixture
def other():
    return factories.tenant_with_key("other")


@pytest.fixture
def room(acme):
    return factories.room_for(acme).connection_id


@pytest.fixture
def api(client, acme):
    def call(method, path, key=None, **query):
        headers = {"Authorization": f"Bearer {key or acme.api_key}"}
        if method == "get":
            return client.get(f"/api/v1{path}", query, headers=headers)
        return getattr(client, method)(
            f"/api/v1{path}", content_type="application/json", headers=headers
        )

    return call


def token_issued_at(issued, user_id: str, iat: int) -> str:
    claims = {"sub": user_id, "cids": ["*"], "iat": iat, "exp": iat + 600}
    secret = signing_secret_for(key=issued.key)
    return jwt.encode(claims, secret, algorithm="HS256", headers={"kid": issued.key.key_id})


def test_an_empty_room_has_no_members(api, room):
    response = api("get", f"/connections/{room}/members")
    assert response.status_code == 200
    assert response.json() == {"connection_id": room, "members": [], "member_count": 0}


def test_remove_is_idempotent_and_put_readmits(api, room):
    first = api("delete", f"/connections/{room}/members/u7")
    assert first.status_code == 200
    body = first.json()
    assert body["connection_id"] == room and body["user_id"] == "u7"
    assert body["status"] == "removed" and body["removed_at"]
    again = api("delete", f"/connections/{room}/members/u7")
    assert again.status_code == 200 and again.json() == body  # the first removal holds
    assert RoomRemoval.objects.filter(room_id=room, user_id="u7").count() == 1

    for _ in range(2):
        admitted = api("put", f"/connections/{room}/members/u7")
        assert admitted.status_code == 200
        assert admitted.json() == {
            "connection_id": room,
            "user_id": "u7",
            "status": "admitted",
            "removed_at": None,
        }
    assert not RoomRemoval.objects.exists()


def test_user_ids_are_the_token_subjects_any_text_up_to_128(api, room):
    for user_id in ("a/b", "ada@example.edu", "ü" * 128):
        response = api("delete", f"/connections/{room}/members/{user_id}")
        assert response.status_code == 200, response.json()
        assert response.json()["user_id"] == user_id
        assert api("post", f"/users/{user_id}/revoke").json()["user_id"] == user_id


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("delete", "/connections/{room}/members/{user}"),
        ("put", "/connections/{room}/members/{user}"),
        ("post", "/users/{user}/revoke"),
    ],
)
@pytest.mark.parametrize("user", ["x" * 129, "a%00b", "bell%07"])
def test_bad_user_ids_are_422_in_the_api_error_shape(api, room, method, path, user):
    response = api(method, path.format(room=room, user=user))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert error["details"][0]["loc"] == ["path", "user_id"]
    assert not RoomRemoval.objects.exists() and not UserRevocation.objects.exists()


def test_bad_limit_is_422(api, room):
    for limit in ("0", "1001", "x"):
        response = api("get", f"/connections/{room}/members", limit=limit)
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["loc"] == ["query", "limit"]


def test_another_tenants_room_is_404_and_untouched(api, other):
    foreign = factories.room_for(other).connection_id
    for connection_id in (foreign, new_ulid(), "not-a-ulid"):
        for method, path in (
            ("get", f"/connections/{connection_id}/members"),
            ("delete", f"/connections/{connection_id}/members/u7"),
            ("put", f"/connections/{connection_id}/members/u7"),
        ):
            response = api(method, path)
            assert response.status_code == 404, (method, path)
            assert response.json() == {
                "error": {"code": "not_found", "message": "no such resource"}
            }
    assert not RoomRemoval.objects.exists()
    # The owner sees its room as usual.
    owned = api("get", f"/connections/{foreign}/members", key=other.api_key)
    assert owned.status_code == 200


def test_no_api_key_is_401(client, room):
    for method, path in (
        ("get", f"/connections/{room}/members"),
        ("delete", f"/connections/{room}/members/u7"),
        ("put", f"/connections/{room}/members/u7"),
        ("post", "/users/u7/revoke"),
    ):
        response = getattr(client, method)(f"/api/v1{path}")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"


def test_revoking_refuses_tokens_issued_until_then_and_only_that_tenants(api, acme, other):
    before = factories.token_for(acme, user_id="u7")
    same_id_elsewhere = factories.token_for(other, user_id="u7")
    response = api("post", "/users/u7/revoke")
    assert response.status_code == 200
    body = response.json()
    revoked_at = datetime.fromisoformat(body["revoked_at"]).timestamp()
    assert body["user_id"] == "u7" and abs(revoked_at - time.time()) < 5

    with pytest.raises(tokens.TokenRejected) as rejected:
        tokens.authenticate(before)
    assert rejected.value.close_code == 4401 and "revoked" in rejected.value.reason
    with pytest.raises(tokens.TokenRejected):  # minted in the same second: refused too
        tokens.authenticate(token_issued_at(acme, "u7", int(revoked_at)))
    assert tokens.authenticate(token_issued_at(acme, "u7", int(revoked_at) + 1)).id == "u7"
    assert tokens.authenticate(same_id_elsewhere).tenant == other.tenant
    assert tokens.authenticate(factories.token_for(acme, user_id="u8")).id == "u8"

    later = api("post", "/users/u7/revoke").json()  # again: moves the moment forward
    assert later["revoked_at"] >= body["revoked_at"]
    assert UserRevocation.objects.filter(user_id="u7").count() == 1


def test_the_openapi_document_lists_the_endpoints(client):
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    assert set(paths["/api/v1/connections/{connection_id}/members"]) == {"get"}
    assert set(paths["/api/v1/connections/{connection_id}/members/{user_id}"]) == {"delete", "put"}
    assert set(paths["/api/v1/users/{user_id}/revoke"]) == {"post"}
