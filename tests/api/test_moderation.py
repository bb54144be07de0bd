"""REST moderation through Django's test client: the real database, room stream and SQS."""

import json

import pytest
from asgiref.sync import async_to_sync

from chatsvc.core.ulid import new_ulid
from chatsvc.messaging import content
from chatsvc.messaging.actions import post_message
from chatsvc.realtime import tokens
from chatsvc.rooms.models import RoomMute, RoomRemoval
from tests import factories
from tests.realtime.conftest import queued_bodies

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def acme(aws):
    return factories.tenant_with_key("acme")


@pytest.fixture
def room(acme):
    return factories.room_for(acme).connection_id


@pytest.fixture
def api(client, acme):
    def call(method, path, body=None, key=None):
        return getattr(client, method)(
            f"/api/v1{path}",
            data=json.dumps(body) if body is not None else None,
            content_type="application/json",
            headers={"Authorization": f"Bearer {key or acme.api_key}"},
        )

    return call


def ada(issued) -> tokens.ChatUser:
    return tokens.ChatUser(
        id="ada",
        name="Ada",
        role="member",
        tenant=issued.tenant,
        rooms=None,
        expires_at=2_000_000_000,
        key_id=issued.key.key_id,
    )


def posted(acme, room, body="hello"):
    user = ada(acme)
    return async_to_sync(post_message)(
        user=user, connection_id=room, client_id=new_ulid(), body=body
    )


def test_the_tenant_deletes_any_message(api, acme, room, aws):
    message = posted(acme, room)
    response = api("delete", f"/connections/{room}/messages/{message.id}")
    assert response.status_code == 200, response.json()
    assert response.json()["seq"] == message.seq + 1
    [_, event] = queued_bodies(aws)
    assert event["event"]["type"] == "message_deleted" and event["event"]["moderated"] is True
    assert event["event"]["by"] is None  # the tenant's backend, for no named user

    # A retry (after a 503, say) answers the same event and changes nothing.
    again = api("delete", f"/connections/{room}/messages/{message.id}")
    assert again.status_code == 200 and again.json() == response.json()
    history = api("get", f"/connections/{room}/messages").json()["messages"]
    assert history[0]["deleted"] is True and "body" not in history[0]


def test_unknown_and_other_tenants_messages_are_404(api, acme, room):
    assert api("delete", f"/connections/{room}/messages/{new_ulid()}").status_code == 404
    assert api("delete", f"/connections/{room}/messages/not-an-id").status_code == 404
    other = factories.tenant_with_key("other")
    theirs = factories.room_for(other).connection_id
    message = posted(other, theirs)
    response = api("delete", f"/connections/{theirs}/messages/{message.id}")
    assert response.status_code == 404


def test_mute_ban_and_lift_are_recorded_and_listed(api, room):
    muted = api(
        "post",
        f"/connections/{room}/moderation",
        {
            "action": "mute",
            "user_id": "ada",
            "seconds": 60,
            "reason": "flood",
            "by": {"id": "prof", "name": "Prof"},
        },
    )
    assert muted.status_code == 200, muted.json()
    mute = RoomMute.objects.get(room_id=room, user_id="ada")
    assert (mute.muted_by, mute.reason) == ("prof", "flood")
    banned = api("post", f"/connections/{room}/moderation", {"action": "ban", "user_id": "bob"})
    assert banned.status_code == 200
    state = api("get", f"/connections/{room}/moderation").json()
    assert [m["user_id"] for m in state["mutes"]] == ["ada"]
    assert [(b["user_id"], b["until"]) for b in state["bans"]] == [("bob", None)]

    for action, user in (("unmute", "ada"), ("unban", "bob")):
        response = api(
            "post", f"/connections/{room}/moderation", {"action": action, "user_id": user}
        )
        assert response.status_code == 200
    assert not RoomMute.objects.exists() and not RoomRemoval.objects.exists()
    assert api("get", f"/connections/{room}/moderation").json() == {
        "connection_id": room,
        "mutes": [],
        "bans": [],
    }


@pytest.mark.parametrize(
    "body",
    [
        {"action": "mute", "user_id": "ada"},  # no seconds
        {"action": "kick", "user_id": "ada", "seconds": 5},
        {"action": "explode", "user_id": "ada"},
        {"action": "ban", "user_id": ""},
        {"action": "ban", "user_id": "ada", "seconds": 0},
        {"action": "ban", "user_id": "a\x00da"},
        {"action": "ban", "user_id": "ada", "reason": "x" * 501},
    ],
)
def test_bad_moderation_requests_are_422(api, room, body):
    response = api("post", f"/connections/{room}/moderation", body)
    assert response.status_code == 422, response.json()
    assert not RoomMute.objects.exists() and not RoomRemoval.objects.exists()


def test_another_tenants_room_cannot_be_moderated(api):
    other = factories.tenant_with_key("other")
    theirs = factories.room_for(other).connection_id
    body = {"action": "ban", "user_id": "ada"}
    assert api("post", f"/connections/{theirs}/moderation", body).status_code == 404
    assert api("get", f"/connections/{theirs}/moderation").status_code == 404


def test_deleting_what_a_user_deleted_is_409(api, acme, room):
    message = posted(acme, room)
    async_to_sync(content.delete_message)(
        actor=content.Actor.of_user(ada(acme)),
        connection_id=room,
        client_id="d",
        message_id=message.id,
    )
    response = api("delete", f"/connections/{room}/messages/{message.id}")
    assert response.status_code == 409 and response.json()["error"]["code"] == "message_deleted"


def test_a_plain_removal_outranks_an_expired_or_moderators_ban(api, room):
    from datetime import timedelta

    from django.utils import timezone

    from chatsvc.rooms.selectors import is_removed

    RoomRemoval.objects.create(
        room_id=room, user_id="u1", until=timezone.now() - timedelta(seconds=1), by_moderator=True
    )
    assert not is_removed(connection_id=room, user_id="u1")  # the ban ran out
    assert api("delete", f"/connections/{room}/members/u1").status_code == 200
    assert is_removed(connection_id=room, user_id="u1")
    removal = RoomRemoval.objects.get(room_id=room, user_id="u1")
    assert (removal.until, removal.by_moderator) == (None, False)


def test_an_idempotency_key_makes_a_moderation_retry_safe(api, room, client, acme):
    def mute(key):
        return client.post(
            f"/api/v1/connections/{room}/moderation",
            data=json.dumps({"action": "mute", "user_id": "ada", "seconds": 60}),
            content_type="application/json",
            headers={"Authorization": f"Bearer {acme.api_key}", "Idempotency-Key": key},
        )

    first, again, other = mute("k1"), mute("k1"), mute("k2")
    assert first.json() == again.json() and other.json()["seq"] == first.json()["seq"] + 1
    assert mute("").status_code == 422
