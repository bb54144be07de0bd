"""Tenants, keys and their secrets: commands, storage and the admin."""

import json
import uuid
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from chatsvc.tenants import secrets
from chatsvc.tenants.models import Tenant, TenantKey
from chatsvc.tenants.selectors import signing_secret_for, tenant_for_api_key
from tests import factories

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_tenant_prints_credentials_once_as_json():
    issued = json.loads(
        run("create_tenant", "uni", "--name", "Uni", "--origin", "https://u.edu", "--json")
    )
    assert set(issued) == {"tenant_id", "slug", "key_id", "api_key", "signing_secret"}
    tenant = Tenant.objects.get(pk=issued["tenant_id"])
    assert (tenant.slug, tenant.name, tenant.origins) == ("uni", "Uni", ["https://u.edu"])
    key = TenantKey.objects.get(key_id=issued["key_id"])
    # Stored hashed / encrypted, never in clear.
    assert issued["api_key"] not in key.api_key_hash
    assert issued["signing_secret"] not in key.signing_secret_encrypted
    assert key.api_key_hash == secrets.hash_api_key(issued["api_key"])
    assert signing_secret_for(key=key) == issued["signing_secret"]
    assert tenant_for_api_key(api_key=issued["api_key"]) == tenant


def test_create_tenant_rejects_a_duplicate_slug():
    run("create_tenant", "uni")
    with pytest.raises(CommandError, match="uni"):
        run("create_tenant", "uni")


def test_rotate_keeps_old_keys_valid_until_revoked():
    first = json.loads(run("create_tenant", "uni", "--json"))
    second = json.loads(run("rotate_tenant_key", "uni", "--json"))
    assert second["key_id"] != first["key_id"]
    assert tenant_for_api_key(api_key=first["api_key"]) is not None
    assert tenant_for_api_key(api_key=second["api_key"]) is not None
    third = json.loads(run("rotate_tenant_key", "uni", "--revoke-others", "--json"))
    assert tenant_for_api_key(api_key=first["api_key"]) is None
    assert tenant_for_api_key(api_key=second["api_key"]) is None
    assert tenant_for_api_key(api_key=third["api_key"]) is not None
    with pytest.raises(CommandError):
        run("rotate_tenant_key", "missing")


def test_a_tampered_api_key_does_not_authenticate():
    issued = factories.tenant_with_key("uni")
    assert tenant_for_api_key(api_key=issued.api_key[:-1] + "x") is None
    assert tenant_for_api_key(api_key="csk_" + issued.key.key_id) is None


def test_signing_secrets_survive_secret_key_rotation(settings):
    issued = factories.tenant_with_key("uni")
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-new-secret-key-" + "z" * 50
    assert signing_secret_for(key=issued.key) == issued.signing_secret
    settings.SECRET_KEY_FALLBACKS = []
    assert signing_secret_for(key=issued.key) is None


@pytest.fixture
def admin_client(client):
    user = User.objects.create_superuser("op", "op@example.com", "pw-for-tests-only")
    client.force_login(user)
    return client


def test_admin_never_shows_secrets_in_list_or_change_views(admin_client):
    issued = factories.tenant_with_key("uni")
    pages = [
        "/admin/tenants/tenant/",
        f"/admin/tenants/tenant/{issued.tenant.pk}/change/",
        "/admin/tenants/tenantkey/",
        f"/admin/tenants/tenantkey/{issued.key.pk}/change/",
    ]
    for page in pages:
        html = admin_client.get(page).content.decode()
        assert issued.tenant.slug in html, page  # the page really rendered the tenant
        for secret in (issued.api_key, issued.signing_secret, issued.key.api_key_hash):
            assert secret not in html, page


def test_admin_rotate_shows_the_new_secret_once(admin_client):
    issued = factories.tenant_with_key("uni")
    response = admin_client.post(
        "/admin/tenants/tenant/",
        {"action": "rotate_key", "_selected_action": [issued.tenant.pk]},
    )
    assert response.status_code == 200
    html = response.content.decode()
    newest = issued.tenant.keys.first()
    assert newest.key_id != issued.key.key_id and newest.key_id in html
    assert "csk_" + newest.key_id in html
    assert "no-store" in response["Cache-Control"]
    api_key = html.split("csk_" + newest.key_id)[1].split("<")[0]
    assert tenant_for_api_key(api_key="csk_" + newest.key_id + api_key) == issued.tenant
    # ...and never again.
    assert (
        "csk_"
        not in admin_client.get(
            f"/admin/tenants/tenant/{issued.tenant.pk}/change/"
        ).content.decode()
    )


def test_admin_revokes_keys_deactivates_tenants_and_closes_rooms(admin_client):
    issued = factories.tenant_with_key("uni")
    room = factories.room_for(issued)
    admin_client.post(
        "/admin/tenants/tenantkey/", {"action": "revoke", "_selected_action": [issued.key.pk]}
    )
    assert tenant_for_api_key(api_key=issued.api_key) is None
    admin_client.post(
        "/admin/tenants/tenant/", {"action": "deactivate", "_selected_action": [issued.tenant.pk]}
    )
    issued.tenant.refresh_from_db()
    assert not issued.tenant.is_active
    admin_client.post(
        "/admin/rooms/room/", {"action": "close_rooms", "_selected_action": [room.pk]}
    )
    room.refresh_from_db()
    assert room.status == "closed"


def test_admin_lists_search_and_filter(admin_client):
    factories.tenant_with_key("alpha")
    factories.tenant_with_key("beta")
    html = admin_client.get("/admin/tenants/tenant/?q=alph").content.decode()
    assert "alpha" in html and "beta" not in html
    assert admin_client.get("/admin/tenants/tenant/?is_active__exact=1").status_code == 200
    assert admin_client.get("/admin/rooms/room/?status__exact=open").status_code == 200


def test_reencrypting_lets_an_old_secret_key_go(settings):
    old_key, new_key = "o" * 60, "n" * 60
    settings.SECRET_KEY = old_key
    issued = factories.tenant_with_key("rekey")
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = new_key, [old_key]
    call_command("reencrypt_signing_secrets")

    settings.SECRET_KEY_FALLBACKS = []  # the old key is gone
    stored = TenantKey.objects.get(pk=issued.key.pk)
    assert signing_secret_for(key=stored) == issued.signing_secret


def test_reencrypting_reports_secrets_no_key_can_read(settings):
    settings.SECRET_KEY = "a" * 60
    issued = factories.tenant_with_key("lost")
    settings.SECRET_KEY, settings.SECRET_KEY_FALLBACKS = "b" * 60, []
    with pytest.raises(CommandError, match=issued.key.key_id):
        call_command("reencrypt_signing_secrets")


def test_admin_logins_are_throttled_after_repeated_failures(client, settings):
    settings.CHAT_ADMIN_LOGIN_FAILURES = 3
    User.objects.create_superuser("root", "root@example.com", "the-right-password")
    address = f"198.51.100.{uuid.uuid4().int % 250}-{uuid.uuid4().hex}"  # counts outlive a run
    attempt = {"username": "root", "password": "wrong", "next": "/admin/"}
    statuses = [
        client.post("/admin/login/", attempt, REMOTE_ADDR=address).status_code for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]  # the form again three times, then refused
    right = {**attempt, "password": "the-right-password"}
    refused = client.post("/admin/login/", right, REMOTE_ADDR=address)
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0


def test_api_keys_are_rate_limited_with_retry_after(client, settings):
    settings.CHAT_API_REQUESTS_PER_MINUTE = 3
    issued = factories.tenant_with_key("busy")
    other = factories.tenant_with_key("calm")
    statuses = [
        client.get("/api/v1/connections/01M8BPJBQT841DKEDQYC4XZ3AJ", headers=bearer(issued))
        for _ in range(4)
    ]
    assert [r.status_code for r in statuses] == [404, 404, 404, 429]
    assert statuses[-1].json()["error"]["code"] == "rate_limited"
    assert 0 < int(statuses[-1]["Retry-After"]) <= 60
    calm = client.get("/api/v1/connections/01M8BPJBQT841DKEDQYC4XZ3AJ", headers=bearer(other))
    assert calm.status_code == 404  # another key has its own budget


def bearer(issued):
    return {"Authorization": f"Bearer {issued.api_key}"}


def test_the_smoke_key_goes_to_secrets_manager_and_never_to_the_output(aws):
    """A one-off task's output lands in CloudWatch Logs: nothing secret may be in it."""
    from chatsvc.aws import clients

    secrets_manager = clients.client("secretsmanager")
    secret = secrets_manager.create_secret(Name=f"smoke-{uuid.uuid4().hex[:8]}")["ARN"]
    output = run("create_tenant", "smoke", "--json", "--store-api-key-in", secret)
    printed = json.loads(output)
    assert set(printed) == {"tenant_id", "slug", "key_id", "api_key_stored_in"}
    stored = secrets_manager.get_secret_value(SecretId=secret)["SecretString"]
    assert tenant_for_api_key(api_key=stored).slug == "smoke"
    assert stored not in output

    rotated = run("rotate_tenant_key", "smoke", "--revoke-others", "--store-api-key-in", secret)
    new_key = secrets_manager.get_secret_value(SecretId=secret)["SecretString"]
    assert new_key != stored and new_key not in rotated and "api_key_stored_in" in rotated
    assert tenant_for_api_key(api_key=new_key).slug == "smoke"
    assert tenant_for_api_key(api_key=stored) is None


def test_a_key_that_cannot_be_stored_is_not_created(aws):
    with pytest.raises(CommandError, match=r"cannot store the API key in .*nothing was created"):
        run("create_tenant", "smoke", "--store-api-key-in", "no-such-secret")
    assert not Tenant.objects.filter(slug="smoke").exists()
