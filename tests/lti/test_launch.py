"""The launch flow in-process: login initiation, the platform's auth redirect, the
signed id_token POSTed back, validated against the platform's JWKS served over
HTTP; the chat page; and each refusal with its status and error code."""

import json
import re
import time

import pytest
from django.core import signing
from lti_tool.models import LtiDeployment

from chatsvc.lti import views
from chatsvc.lti.models import CourseRoom
from chatsvc.realtime import tokens
from chatsvc.rooms.services import close_room
from tests import factories
from tests.lti.conftest import register
from tests.lti.platform import FakePlatform

pytestmark = pytest.mark.django_db


def page_data(response) -> dict:
    match = re.search(
        r'<script id="lti-chat" type="application/json">(.*?)</script>', response.content.decode()
    )
    assert match, response.content.decode()
    return json.loads(match.group(1))


def refused(response, status: int, code: str) -> str:
    assert response.status_code == status, response.content.decode()
    assert response["X-LTI-Error"] == code
    text = response.content.decode()
    assert f'<code id="error-code">{code}</code>' in text
    return text


def test_an_instructor_launch_renders_the_chat_page_with_a_moderator_token(
    launcher, registered, platform
):
    response = launcher.launch(user="teacher")
    assert response.status_code == 200, response.content.decode()
    data = page_data(response)
    room = CourseRoom.objects.get(platform=registered).room
    assert data["connection_id"] == room.connection_id
    assert room.title == "Course course-101"

    user = tokens.authenticate(data["token"])  # the service's own token format
    assert user.tenant == registered.tenant
    assert user.rooms == {room.connection_id}
    assert user.role == "moderator"
    assert user.name == "Tess Teacher"
    assert user.id == f"lti{registered.registration_id}:t-1"
    assert user.expires_at - time.time() <= views.CHAT_TOKEN_TTL_SECONDS + 1

    # Framed by the platform only; no cookie needed after the launch.
    policy = response["Content-Security-Policy"]
    assert f"frame-ancestors {platform.url}" in policy
    assert "script-src 'self'" in policy
    assert "X-Frame-Options" not in response
    assert "sessionid" not in response.cookies
    assert "no-store" in response["Cache-Control"]


def test_a_learner_launch_joins_the_same_course_room_as_a_member(launcher, registered):
    teacher = page_data(launcher.launch(user="teacher"))
    student = page_data(launcher.launch(user="student"))
    assert student["connection_id"] == teacher["connection_id"]
    user = tokens.authenticate(student["token"])
    assert (user.role, user.name) == ("member", "Sam Student")


def test_the_page_renews_its_token_with_its_ticket(launcher, registered, client):
    data = page_data(launcher.launch(user="student"))
    response = client.post(
        "/lti/token/", json.dumps({"ticket": data["ticket"]}), content_type="application/json"
    )
    assert response.status_code == 200
    user = tokens.authenticate(response.json()["token"])
    assert user.rooms == {data["connection_id"]} and user.role == "member"

    forged = data["ticket"][:-2] + ("AA" if not data["ticket"].endswith("AA") else "BB")
    response = client.post(
        "/lti/token/", json.dumps({"ticket": forged}), content_type="application/json"
    )
    assert response.status_code == 401

    close_room(room=CourseRoom.objects.get().room)
    response = client.post(
        "/lti/token/", json.dumps({"ticket": data["ticket"]}), content_type="application/json"
    )
    assert response.status_code == 403


def test_an_expired_ticket_is_refused(launcher, registered, client, monkeypatch):
    data = page_data(launcher.launch())
    monkeypatch.setattr(views, "TICKET_MAX_AGE_SECONDS", -1)
    response = client.post(
        "/lti/token/", json.dumps({"ticket": data["ticket"]}), content_type="application/json"
    )
    assert response.status_code == 401
    assert signing.loads(data["ticket"], salt=views.TICKET_SALT)["c"] == data["connection_id"]


# --- refusals ---------------------------------------------------------------------------


def test_a_tampered_signature_is_refused(launcher, registered):
    text = refused(launcher.launch(tamper=True), 403, "bad_signature")
    assert "signature is not valid" in text
    assert not CourseRoom.objects.exists()


def test_a_token_signed_by_a_key_outside_the_jwks_is_refused(launcher, registered):
    refused(launcher.launch(forge=True), 403, "bad_signature")


def test_an_expired_token_is_refused(launcher, registered):
    past = int(time.time()) - 3600
    text = refused(launcher.launch(claims={"iat": past, "exp": past + 300}), 403, "token_expired")
    assert "expired" in text


def test_a_token_without_exp_is_refused(launcher, registered):
    refused(launcher.launch(drop=["exp"]), 400, "claim_missing")


def test_a_token_from_the_future_is_refused(launcher, registered):
    later = int(time.time()) + 600
    refused(launcher.launch(claims={"iat": later, "exp": later + 300}), 403, "token_not_yet_valid")


def test_a_wrong_audience_is_refused(launcher, registered):
    text = refused(launcher.launch(claims={"aud": "another-tool"}), 403, "wrong_audience")
    assert "another-tool" in text and "wrong_audience" in text


def test_several_audiences_need_azp_naming_this_tool(launcher, registered, platform):
    audiences = [platform.client_id, "another-tool"]
    refused(launcher.launch(claims={"aud": audiences}), 403, "wrong_audience")
    ok = launcher.launch(claims={"aud": audiences, "azp": platform.client_id})
    assert ok.status_code == 200, ok.content.decode()


def test_an_unknown_deployment_is_refused_and_listed_for_the_operator(launcher, registered):
    text = refused(
        launcher.launch(claims={"https://purl.imsglobal.org/spec/lti/claim/deployment_id": "x"}),
        403,
        "unknown_deployment",
    )
    assert "Deployment id &#x27;x&#x27;" in text
    listed = LtiDeployment.objects.get(registration=registered.registration, deployment_id="x")
    assert not listed.is_active
    assert not CourseRoom.objects.exists()


def test_a_replayed_nonce_is_refused(launcher, registered):
    assert launcher.launch().status_code == 200
    refused(launcher.replay(), 403, "replayed_nonce")


def test_a_nonce_the_tool_never_issued_is_refused(launcher, registered):
    params = launcher.login()
    token = launcher.platform.id_token_for({**params, "nonce": "made-up"})
    refused(launcher.post(params, token), 403, "bad_nonce")


def test_a_launch_without_the_login_cookie_is_refused(launcher, registered, client):
    params = launcher.login()
    client.cookies.clear()
    refused(launcher.post(params, launcher.platform.id_token_for(params)), 400, "state_mismatch")


def test_an_unknown_platform_is_refused_at_login(launcher, registered, client):
    response = client.get("/lti/login/?iss=https://evil.example&login_hint=x&client_id=y")
    refused(response, 400, "unknown_platform")
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]


def test_deep_linking_is_not_supported(launcher, registered):
    message_type = "https://purl.imsglobal.org/spec/lti/claim/message_type"
    settings_claim = "https://purl.imsglobal.org/spec/lti-dl/claim/deep_linking_settings"
    response = launcher.launch(
        claims={
            message_type: "LtiDeepLinkingRequest",
            settings_claim: {
                "deep_link_return_url": "https://lms.example/return",
                "accept_types": ["ltiResourceLink"],
                "accept_presentation_document_targets": ["iframe"],
            },
        },
        drop=["https://purl.imsglobal.org/spec/lti/claim/resource_link"],
    )
    refused(response, 400, "unsupported_message")


def test_a_disabled_tenant_is_refused(launcher, registered):
    registered.tenant.is_active = False
    registered.tenant.save()
    refused(launcher.launch(), 403, "tenant_disabled")


def test_a_closed_course_room_is_refused(launcher, registered):
    assert launcher.launch().status_code == 200
    close_room(room=CourseRoom.objects.get().room)
    refused(launcher.launch(), 403, "room_closed")


def test_a_launch_belongs_to_the_registrations_tenant_only(client, settings, registered):
    """Two LMSs of two tenants use the same course id: each launch gets its tenant's room."""
    settings.ROOT_URLCONF = "tests.lti.urls"
    from tests.lti.conftest import Launcher

    with FakePlatform(client_id="rival-client") as rival:
        rival_lms = register(rival, factories.tenant_with_key("rival-school"))
        theirs = page_data(Launcher(client, rival).launch())
    user = tokens.authenticate(theirs["token"])
    assert user.tenant == rival_lms.tenant != registered.tenant
    assert CourseRoom.objects.get(room_id=theirs["connection_id"]).tenant == rival_lms.tenant


# --- what the administrator pastes ---------------------------------------------------------


def test_jwks_and_configuration_are_published(client, settings, db):
    settings.ROOT_URLCONF = "tests.lti.urls"
    jwks = client.get("/lti/jwks.json").json()
    assert jwks["keys"] and jwks["keys"][0]["kty"] == "RSA" and "d" not in jwks["keys"][0]
    assert client.get("/lti/jwks.json").json() == jwks  # one key, made once

    config = client.get("/lti/config.json").json()
    assert config["oidc_initiation_url"] == "http://testserver/lti/login/"
    assert config["target_link_uri"] == "http://testserver/lti/launch/"
    assert config["public_jwk_url"] == "http://testserver/lti/jwks.json"
    placements = config["extensions"][0]["settings"]["placements"]
    assert {p["placement"] for p in placements} == {"course_navigation", "link_selection"}

    setup = client.get("/lti/").content.decode()
    for url in ("/lti/login/", "/lti/launch/", "/lti/jwks.json", "/lti/config.json"):
        assert f"http://testserver{url}" in setup


def test_an_unreachable_platform_jwks_is_a_clear_error(launcher, registered):
    registered.registration.keyset_url = "http://127.0.0.1:9/jwks"  # nothing listens
    registered.registration.save()
    refused(launcher.launch(), 502, "platform_jwks_unavailable")


def test_a_removed_or_revoked_user_cannot_renew_or_relaunch(launcher, registered, client):
    from chatsvc.rooms.models import RoomRemoval, UserRevocation

    data = page_data(launcher.launch(user="student"))
    user_id = f"lti{registered.registration_id}:s-1"
    time.sleep(1.1)  # revocations count whole seconds
    UserRevocation.objects.create(tenant=registered.tenant, user_id=user_id)
    renew = client.post(
        "/lti/token/", json.dumps({"ticket": data["ticket"]}), content_type="application/json"
    )
    assert renew.status_code == 403

    room = CourseRoom.objects.get().room
    RoomRemoval.objects.create(room=room, user_id=user_id)
    refused(launcher.launch(user="student"), 403, "removed")
    assert launcher.launch(user="teacher").status_code == 200


def test_an_https_launch_without_the_login_cookie_says_so_not_500(registered, client):
    """Browsers that block cookies in frames drop pylti1p3's session cookie."""
    response = client.post("/lti/launch/", {"id_token": "x.y.z", "state": "s"}, secure=True)
    text = refused(response, 403, "state_mismatch")
    assert "cookie" in text


def test_the_login_url_naming_a_registration_needs_no_client_id(registered, client, platform):
    url = f"/lti/login/{registered.registration.uuid}/"
    response = client.get(url, {"iss": platform.issuer, "login_hint": "x", "target_link_uri": "x"})
    assert response.status_code == 302, response.content.decode()
    assert response["Location"].startswith(platform.auth_url)
