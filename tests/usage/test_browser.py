"""Headless Chromium on the usage page: a superuser logs in to the admin, opens a
tenant's usage with recorded data and sees the charts. The screenshot's path is
printed (pytest -s, or the captured output of a failure) and attached to the
test's user_properties (--junitxml)."""

import asyncio
import threading
from urllib.parse import urlsplit

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from chatsvc.messaging import runtime
from chatsvc.usage import recorder
from tests.e2e.conftest import browser  # noqa: F401  (fixture)
from tests.usage.conftest import event, hours_ago, message, sockets

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PASSWORD = "pw-browser-only-123"


@pytest.fixture(scope="module", autouse=True)
def _orm_first(orm_beside_playwright):
    """Before the browser starts and until the database is flushed after the test."""


def sample_in_another_loop(live):
    """A web process's sweep: sample_sockets in an event loop of its own."""

    async def sample():
        try:
            await recorder.sample_sockets(live)
        finally:
            await runtime.shutdown()

    thread = threading.Thread(target=lambda: asyncio.run(sample()))
    thread.start()
    thread.join(30)


@pytest.fixture
def recorded(acme, other, usage_redis_if_set):
    """Two days of a tenant's traffic through the recorder, and another tenant's."""
    for hours in range(0, 40):
        senders = (hours * 5) % 9 + 1
        batch = [message(acme.id, f"user{n}", hours_ago(hours, minute=n)) for n in range(senders)]
        batch += [message(acme.id, "user0", hours_ago(hours, minute=30))] * (hours % 4)
        recorder.record_batch(batch, [event(acme.id, hours_ago(hours))], 100)
    recorder.record_batch([message(other.id, "zed", hours_ago(1))] * 500, [], 10)
    sample_in_another_loop(sockets(**{acme.id: 12, other.id: 99}))
    return acme


@pytest.fixture
def usage_redis_if_set(settings, request):
    if settings.REDIS_URL:
        return request.getfixturevalue("usage_redis")
    return request.getfixturevalue("no_redis")


def test_an_operator_sees_a_tenants_usage_charts(
    live_server,
    browser,  # noqa: F811
    recorded,
    settings,
    tmp_path,
    request,
):
    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False  # plain http here
    User.objects.create_superuser("operator", "ops@example.com", PASSWORD)
    usage_path = f"/admin/tenants/tenant/{recorded.pk}/usage/"
    ours = urlsplit(live_server.url).netloc
    elsewhere, problems = [], []

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()

        def route(route):
            if urlsplit(route.request.url).netloc not in ("", ours):
                elsewhere.append(route.request.url)
                return route.abort()
            return route.continue_()

        page.route("**/*", route)
        # A Content-Security-Policy violation is reported as a console error.
        page.on("console", lambda m: m.type == "error" and problems.append(m.text))
        page.on("pageerror", lambda error: problems.append(str(error)))

        page.goto(f"{live_server.url}/admin/login/?next={usage_path}")
        page.fill("#id_username", "operator")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        expect(page).to_have_url(f"{live_server.url}{usage_path}")
        expect(page.locator("h1")).to_have_text("Usage of acme")

        charts = page.locator("svg.usage-chart")
        expect(charts).to_have_count(5)
        for chart_id in ("messages", "active-users", "live-sockets", "queue-lag"):
            chart = page.locator(f"svg#chart-{chart_id}")
            expect(chart).to_be_visible()
            expect(chart.locator("rect.bar")).to_have_count(48)
        # No failed webhook attempts: the panel says so instead of drawing bars.
        expect(page.locator("svg#chart-webhook-failures rect.bar")).to_have_count(0)
        expect(page.locator("svg#chart-webhook-failures text.empty")).to_have_text(
            "No failed webhook attempts in this period"
        )
        # The bars have drawn height; the current hour's messages are the tallest of none.
        tallest = page.locator("svg#chart-messages rect.bar").evaluate_all(
            "bars => Math.max(...bars.map(b => b.getBBox().height))"
        )
        assert tallest > 50
        expect(page.locator("#live-now")).to_have_text("12")  # the other tenant's 99 are not here
        expect(page.locator("#usage-table tbody tr")).to_have_count(48)

        shot = tmp_path / "usage-48-hours.png"
        page.screenshot(path=str(shot), full_page=True)

        page.click("text=Last 30 days, by day")
        expect(page).to_have_url(f"{live_server.url}{usage_path}?period=days")
        expect(page.locator("svg#chart-messages rect.bar")).to_have_count(30)
        expect(page.locator("#usage-table tbody tr")).to_have_count(30)
        days_shot = tmp_path / "usage-30-days.png"
        page.screenshot(path=str(days_shot), full_page=True)

        # Back to the tenant: its change page links here.
        page.goto(f"{live_server.url}/admin/tenants/tenant/{recorded.pk}/change/")
        page.click("a.usage-link")
        expect(page).to_have_url(f"{live_server.url}{usage_path}")
    finally:
        context.close()

    for path in (shot, days_shot):
        print(f"screenshot: {path}")
        request.node.user_properties.append(("screenshot", str(path)))
    assert shot.stat().st_size > 10_000
    assert not elsewhere, elsewhere
    assert not problems, problems
