"""End to end: a real `serve` process (PostgreSQL, Redis, moto), the fake platform
over HTTP, and headless Chromium. The LMS's course page embeds the tool in an
iframe; login initiation → the platform's auth endpoint → the signed id_token
POSTed to the launch → the chat page, where an Instructor and a Learner chat.
Then each refusal over real HTTP, as a browser would meet it."""

import json
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from lti_tool.models import LtiDeployment, LtiRegistration
from playwright.sync_api import expect

from chatsvc.lti.models import Platform
from tests import factories
from tests.e2e.conftest import browser  # noqa: F401  (fixture)
from tests.integration.conftest import postgres_url, start_server  # noqa: F401  (fixtures)
from tests.lti.platform import FakePlatform

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("orm_beside_playwright"),
]


@pytest.fixture
def lms():
    with FakePlatform() as platform:
        registration = LtiRegistration.objects.create(
            name="Fake LMS",
            issuer=platform.issuer,
            client_id=platform.client_id,
            auth_url=platform.auth_url,
            token_url=platform.token_url,
            keyset_url=platform.jwks_url,
        )
        LtiDeployment.objects.create(
            registration=registration, deployment_id=platform.deployment_id, is_active=True
        )
        Platform.objects.create(
            registration=registration, tenant=factories.tenant_with_key("lti-e2e").tenant
        )
        yield platform


@pytest.fixture
def tool(start_server):  # noqa: F811
    # DEBUG: static files straight from the app directories (no collectstatic).
    return start_server(DEBUG="true", LOG_FORMAT="console").url


def course_page(lms: FakePlatform, tool: str, user: str, hint: dict | None = None) -> str:
    params = {"tool": tool, "user": user}
    if hint:
        params["hint"] = json.dumps(hint)
    return f"{lms.url}/course?{urlencode(params)}"


def test_an_instructor_and_a_learner_launched_from_the_lms_chat(lms, tool, browser):  # noqa: F811
    contexts = [browser.new_context() for _ in range(2)]
    try:
        teacher, student = (context.new_page() for context in contexts)
        teacher.goto(course_page(lms, tool, "teacher"))
        student.goto(course_page(lms, tool, "student"))
        teacher_chat = teacher.frame_locator("#tool")
        student_chat = student.frame_locator("#tool")
        expect(teacher_chat.locator("#status")).to_have_text("connected", timeout=20000)
        expect(student_chat.locator("#status")).to_have_text("connected", timeout=20000)
        expect(teacher_chat.locator("h1")).to_have_text("Course course-101")
        expect(teacher_chat.locator("#role")).to_have_text("moderator")
        expect(student_chat.locator("#role")).to_have_count(0)

        teacher_chat.locator("#body").fill("Welcome to the course chat")
        teacher_chat.locator("#send").click()
        expect(student_chat.locator("#messages .message")).to_have_text(
            ["Tess Teacher: Welcome to the course chat"], timeout=10000
        )
        student_chat.locator("#body").fill("Thanks!")
        student_chat.locator("#send").click()
        expected = ["Tess Teacher: Welcome to the course chat", "Sam Student: Thanks!"]
        expect(teacher_chat.locator("#messages .message")).to_have_text(expected, timeout=10000)
        expect(student_chat.locator("#messages .message")).to_have_text(expected)

        # Both launches went through the platform's auth endpoint, with the tool's nonce.
        assert [r["login_hint"] for r in lms.auth_requests] == ["teacher", "student"]
        assert all(r["redirect_uri"] == f"{tool}/lti/launch/" for r in lms.auth_requests)
    finally:
        for context in contexts:
            context.close()


def test_a_tampered_launch_shows_the_error_page_in_the_lms(lms, tool, browser):  # noqa: F811
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(course_page(lms, tool, "student", hint={"tamper": True}))
        frame = page.frame_locator("#tool")
        expect(frame.locator("#error-code")).to_have_text("bad_signature", timeout=20000)
        expect(frame.locator("#error-title")).to_have_text("The launch's signature is not valid.")
    finally:
        context.close()


def test_another_site_cannot_frame_the_chat(lms, tool, browser):  # noqa: F811
    """The same course page served from another origin (localhost): the frame stays empty."""
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(course_page(lms, tool, "teacher").replace("127.0.0.1", "localhost", 1))
        expect(page.locator("h1")).to_have_text("Course 101")
        page.wait_for_timeout(3000)
        frame = page.frame_locator("#tool")
        expect(frame.locator("#status")).to_have_count(0)
        expect(frame.locator("#error-code")).to_have_count(0)
    finally:
        context.close()


def http_launch(lms: FakePlatform, tool: str, session=None, **options):
    """The browser's part without a browser: follow the login redirect, POST the token."""
    session = session or requests.Session()
    login = session.get(lms.login_url(tool), allow_redirects=False, timeout=10)
    assert login.status_code == 302, login.text
    params = {k: v[0] for k, v in parse_qs(urlsplit(login.headers["Location"]).query).items()}
    id_token = lms.id_token_for(params, **options)
    form = {"id_token": id_token, "state": params["state"]}
    response = session.post(f"{tool}/lti/launch/", data=form, timeout=10)
    return response, session, form


REFUSALS = [
    ({"tamper": True}, 403, "bad_signature"),
    ({"claims": {"iat": 1_700_000_000, "exp": 1_700_000_300}}, 403, "token_expired"),
    ({"claims": {"aud": "someone-else"}}, 403, "wrong_audience"),
    (
        {"claims": {"https://purl.imsglobal.org/spec/lti/claim/deployment_id": "dep-9"}},
        403,
        "unknown_deployment",
    ),
]


def test_bad_and_replayed_launches_are_refused_by_the_server(lms, tool):
    for options, status, code in REFUSALS:
        response, _, _ = http_launch(lms, tool, **options)
        assert response.status_code == status, (code, response.text)
        assert response.headers["X-LTI-Error"] == code
        assert f'<code id="error-code">{code}</code>' in response.text

    response, session, form = http_launch(lms, tool)
    assert response.status_code == 200, response.text
    assert 'id="lti-chat"' in response.text
    replay = session.post(f"{tool}/lti/launch/", data=form, timeout=10)
    assert replay.status_code == 403
    assert replay.headers["X-LTI-Error"] == "replayed_nonce"
