"""REST: webhook endpoints, deliveries and replays through Django's test client."""

import pytest

from chatsvc.webhooks import outbox
from chatsvc.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.webhooks.conftest import drain, event

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(client, acme):
    def call(method, path, body=None, key=None, **query):
        headers = {"Authorization": f"Bearer {key or acme.api_key}"}
        if method == "get":
            return client.get(f"/api/v1{path}", query, headers=headers)
        return getattr(client, method)(
            f"/api/v1{path}", body, content_type="application/json", headers=headers
        )

    return call


def create(api, url="http://127.0.0.1:9/hook", **body):
    response = api("post", "/webhooks", {"url": url, **body})
    assert response.status_code == 201, response.json()
    return response.json()


def test_create_shows_the_secret_once_and_crud_works(api):
    created = create(api, event_types=["message.created", "room.closed"], description="sync")
    assert created["secret"].startswith("whsec_")
    assert created["event_types"] == ["message.created", "room.closed"]
    assert created["is_enabled"] is True and created["consecutive_failures"] == 0
    webhook_id = created["id"]

    got = api("get", f"/webhooks/{webhook_id}")
    assert got.status_code == 200
    assert "secret" not in got.json()
    assert got.json() == {k: v for k, v in created.items() if k != "secret"}
    assert [w["id"] for w in api("get", "/webhooks").json()["webhooks"]] == [webhook_id]
    assert created["secret"] not in str(api("get", "/webhooks").content)

    patched = api(
        "patch", f"/webhooks/{webhook_id}", {"url": "http://127.0.0.1:10/new", "event_types": []}
    )
    assert patched.status_code == 200
    assert patched.json()["url"] == "http://127.0.0.1:10/new"
    assert patched.json()["event_types"] == [] and patched.json()["description"] == "sync"

    rotated = api("post", f"/webhooks/{webhook_id}/rotate-secret")
    assert rotated.status_code == 200
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != created["secret"]

    assert api("delete", f"/webhooks/{webhook_id}").status_code == 204
    assert api("get", f"/webhooks/{webhook_id}").status_code == 404
    assert not WebhookEndpoint.objects.exists()


def test_patch_re_enables_a_disabled_endpoint(api):
    webhook_id = create(api)["id"]
    WebhookEndpoint.objects.filter(pk=webhook_id).update(
        is_enabled=False, disabled_reason="12 failures in a row", consecutive_failures=12
    )
    assert api("get", f"/webhooks/{webhook_id}").json()["is_enabled"] is False
    enabled = api("patch", f"/webhooks/{webhook_id}", {"is_enabled": True}).json()
    assert enabled["is_enabled"] is True and enabled["consecutive_failures"] == 0
    assert enabled["disabled_reason"] == "" and enabled["disabled_at"] is None
    paused = api("patch", f"/webhooks/{webhook_id}", {"is_enabled": False}).json()
    assert paused["is_enabled"] is False and paused["disabled_reason"] == "disabled by the tenant"


def test_another_tenants_webhook_is_a_404_and_untouched(api, other, acme):
    webhook_id = create(api)["id"]
    outbox.record([event(acme.tenant)])
    delivery_id = WebhookDelivery.objects.get().id
    key = other.api_key
    for method, path in [
        ("get", f"/webhooks/{webhook_id}"),
        ("patch", f"/webhooks/{webhook_id}"),
        ("delete", f"/webhooks/{webhook_id}"),
        ("post", f"/webhooks/{webhook_id}/rotate-secret"),
        ("get", f"/webhooks/{webhook_id}/deliveries"),
        ("post", f"/webhooks/{webhook_id}/deliveries/{delivery_id}/replay"),
    ]:
        body = {"url": "http://127.0.0.1:1/x"} if method == "patch" else None
        response = api(method, path, body, key=key)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] == "not_found"
    assert api("get", "/webhooks", key=key).json() == {"webhooks": []}
    assert WebhookEndpoint.objects.get().url == "http://127.0.0.1:9/hook"
    assert api("get", "/webhooks/01JD7X5M1N2P3Q4R5S6T7V8W9X").status_code == 404


@pytest.mark.parametrize(
    "body, loc, words",
    [
        ({"url": "https://10.0.0.1/hook"}, ["body", "url"], "non-public address (10.0.0.1)"),
        ({"url": "https://169.254.169.254/"}, ["body", "url"], "non-public"),
        ({"url": "https://localhost/hook"}, ["body", "url"], "non-public"),
        ({"url": "http://93.184.215.14/hook"}, ["body", "url"], "must be an https URL"),
        ({"url": "not a url"}, ["body", "url"], "spaces"),
        (
            {"url": "https://93.184.215.14/", "event_types": ["message.exploded"]},
            ["body", "event_types", 0],
            "",
        ),
        ({"url": "https://93.184.215.14/", "description": "x" * 201}, ["body", "description"], ""),
        ({}, ["body", "url"], ""),
    ],
)
def test_validation_errors_name_the_field(api, settings, body, loc, words):
    settings.CHAT_WEBHOOK_ALLOW_PRIVATE = False
    response = api("post", "/webhooks", body)
    assert response.status_code == 422, response.json()
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert [d["loc"] for d in error["details"]] == [loc]
    assert words in error["details"][0]["msg"]
    assert not WebhookEndpoint.objects.exists()


def test_a_public_https_url_is_accepted_without_allow_private(api, settings):
    settings.CHAT_WEBHOOK_ALLOW_PRIVATE = False
    assert create(api, url="https://93.184.215.14/hook")["url"] == "https://93.184.215.14/hook"
    webhook_id = WebhookEndpoint.objects.get().id
    refused = api("patch", f"/webhooks/{webhook_id}", {"url": "https://10.1.2.3/"})
    assert refused.status_code == 422
    assert refused.json()["error"]["details"][0]["loc"] == ["body", "url"]


def test_too_many_webhooks_is_a_409(api, settings):
    settings.CHAT_WEBHOOK_MAX_ENDPOINTS = 2
    create(api)
    create(api)
    response = api("post", "/webhooks", {"url": "http://127.0.0.1:9/third"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "too_many_webhooks"


@pytest.mark.django_db(transaction=True)
def test_deliveries_are_listed_and_a_replay_sends_again(api, acme, receivers):
    receiver = receivers()
    webhook_id = create(api, url=receiver.url)["id"]
    sent = event(acme.tenant)
    outbox.record([sent, event(acme.tenant)])
    drain()
    receiver.wait_for(2)

    listed = api("get", f"/webhooks/{webhook_id}/deliveries", limit=1)
    assert listed.status_code == 200
    page = listed.json()
    assert len(page["deliveries"]) == 1 and page["next"]
    older = api("get", f"/webhooks/{webhook_id}/deliveries", before=page["next"]).json()
    assert len(older["deliveries"]) == 1 and older["next"] is None
    delivery = older["deliveries"][0]
    assert delivery["event_id"] == sent["id"]
    assert delivery["status"] == "delivered" and delivery["attempts"] == 1
    assert delivery["last_status_code"] == 200 and delivery["next_attempt_at"] is None
    assert api("get", f"/webhooks/{webhook_id}/deliveries", status="pending").json() == {
        "deliveries": [],
        "next": None,
    }

    replayed = api("post", f"/webhooks/{webhook_id}/deliveries/{delivery['id']}/replay")
    assert replayed.status_code == 200
    assert replayed.json()["status"] == "pending"
    drain()
    requests = receiver.wait_for(3)
    assert len(requests) == 3
    assert requests[-1]["headers"]["Chatsvc-Event-Id"] == sent["id"]
    assert requests[-1]["body"] in (requests[0]["body"], requests[1]["body"])
    again = WebhookDelivery.objects.get(pk=delivery["id"])
    assert again.status == "delivered" and again.attempts == 2
    missing = api("post", f"/webhooks/{webhook_id}/deliveries/01JD7X5M1N2P3Q4R5S6T7V8W9X/replay")
    assert missing.status_code == 404


def test_openapi_names_the_operations(api, client):
    schema = client.get("/api/v1/openapi.json").json()
    ids = {
        op["operationId"]
        for path, ops in schema["paths"].items()
        if path.startswith("/api/v1/webhooks")
        for op in ops.values()
    }
    assert ids == {
        "listWebhooks",
        "createWebhook",
        "getWebhook",
        "updateWebhook",
        "deleteWebhook",
        "rotateWebhookSecret",
        "listWebhookDeliveries",
        "replayWebhookDelivery",
    }
