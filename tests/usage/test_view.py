"""The admin's usage page: who may see it, whose data it shows, the period switch."""

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission, User

from chatsvc.core.ulid import new_ulid
from chatsvc.usage import recorder
from chatsvc.webhooks import outbox, services
from chatsvc.webhooks.models import WebhookDelivery, WebhookEndpoint
from tests.usage.conftest import hours_ago, message

pytestmark = pytest.mark.django_db


def url(tenant, period=None) -> str:
    return f"/admin/tenants/tenant/{tenant.pk}/usage/" + (f"?period={period}" if period else "")


def svg(html: str, chart: str) -> ET.Element:
    match = re.search(rf'<svg[^>]*id="chart-{chart}".*?</svg>', html, re.S)
    assert match, f"no chart {chart}"
    return ET.fromstring(match[0])  # noqa: S314 - our own page


def bar_values(html: str, chart: str) -> list[float]:
    root = svg(html, chart)
    return [
        float(r.get("data-value"))
        for r in root.iter("{http://www.w3.org/2000/svg}rect")
        if r.get("class") == "bar"
    ]


def test_anonymous_users_are_sent_to_the_login(client, acme):
    response = client.get(url(acme))
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_users_who_are_not_staff_are_refused(client, acme):
    client.force_login(User.objects.create_user("visitor", password="pw-unused-123"))
    response = client.get(url(acme))
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


def test_staff_need_the_permission_to_view_tenants(client, acme):
    staff = User.objects.create_user("ops", password="pw-unused-123", is_staff=True)
    client.force_login(staff)
    assert client.get(url(acme)).status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="view_tenant"))
    assert client.get(url(acme)).status_code == 200


def test_an_unknown_tenant_is_not_found(admin_client):
    assert admin_client.get("/admin/tenants/tenant/nope/usage/").status_code in (302, 404)


def test_the_page_shows_this_tenants_numbers_only(admin_client, acme, other, settings):
    settings.CHAT_WEBHOOK_ALLOW_PRIVATE = True
    moment = hours_ago(2)
    recorder.record_batch(
        [message(acme.id, "ada", moment)] * 1 + [message(acme.id, "bob", moment)], [], 10
    )
    recorder.record_batch([message(other.id, f"u{i}", moment) for i in range(7)], [], 10)
    other_endpoint = services.create_endpoint(tenant=other, url="http://127.0.0.1:9/hook").endpoint
    WebhookEndpoint.objects.filter(pk=other_endpoint.pk).update(
        is_enabled=False, disabled_at=datetime.now(UTC), disabled_reason="other's secret reason"
    )

    response = admin_client.get(url(acme))
    assert response.status_code == 200
    assert (
        response["Cache-Control"].startswith("max-age=0") or "no-cache" in response["Cache-Control"]
    )
    html = response.content.decode()
    messages = bar_values(html, "messages")
    assert len(messages) == 48 and messages[-3] == 2 and sum(messages) == 2
    assert bar_values(html, "active-users")[-3] == 2
    assert "other&#x27;s secret reason" not in html and "other's secret reason" not in html
    assert 'id="disabled-endpoints">0<' in html
    # The table repeats the numbers: 48 rows, newest first.
    table = html[html.index('id="usage-table"') :]
    assert len(re.findall(r'<th scope="row">', table)) == 48
    assert (
        f'<th scope="row">{recorder.hour_of(moment):%Y-%m-%d %H:00}</th>\n          <td>2</td>'
        in table
    )

    others = admin_client.get(url(other)).content.decode()
    assert sum(bar_values(others, "messages")) == 7
    assert "other&#x27;s secret reason" in others


def test_the_period_switch(admin_client, acme):
    recorder.record_batch([message(acme.id, "ada", hours_ago(0))], [], 10)
    recorder.record_batch(
        [
            message(acme.id, "ada", datetime.now(UTC) - timedelta(days=3)),
            message(acme.id, "bob", datetime.now(UTC) - timedelta(days=3)),
        ],
        [],
        10,
    )
    hours = admin_client.get(url(acme)).content.decode()
    assert len(bar_values(hours, "messages")) == 48 and sum(bar_values(hours, "messages")) == 1
    assert 'aria-current="page" href="?period=hours"' in hours

    days = admin_client.get(url(acme, "days")).content.decode()
    values = bar_values(days, "messages")
    assert len(values) == 30 and values[-1] == 1 and values[-4] == 2
    # A day's active users are counted over the day: ada and bob three days ago.
    assert bar_values(days, "active-users")[-4] == 2
    assert 'aria-current="page" href="?period=days"' in days
    assert len(bar_values(admin_client.get(url(acme, "bogus")).content.decode(), "messages")) == 48


def test_webhook_failures_are_read_from_the_deliveries(admin_client, acme, other, settings):
    settings.CHAT_WEBHOOK_ALLOW_PRIVATE = True
    outbox.forget()
    for tenant in (acme, other):
        services.create_endpoint(tenant=tenant, url="http://127.0.0.1:9/hook")
    events = [
        {
            "id": new_ulid(),
            "type": outbox.MESSAGE_CREATED,
            "tenant_id": t.id,
            "connection_id": None,
            "occurred_at": "2026-11-26T10:00:01.123Z",
            "data": {"n": i},
        }
        for i, t in enumerate([acme, acme, acme, other])
    ]
    outbox.record(events)
    outbox.forget()
    acme_rows = list(WebhookDelivery.objects.filter(endpoint__tenant=acme).order_by("id"))
    WebhookDelivery.objects.filter(pk=acme_rows[0].pk).update(
        status="delivered", attempts=3
    )  # 2 failed
    WebhookDelivery.objects.filter(pk=acme_rows[1].pk).update(
        status="failed", attempts=4
    )  # 4 failed
    WebhookDelivery.objects.filter(pk=acme_rows[2].pk).update(
        status="delivered", attempts=1
    )  # none
    WebhookDelivery.objects.filter(endpoint__tenant=other).update(status="failed", attempts=9)

    html = admin_client.get(url(acme)).content.decode()
    failures = bar_values(html, "webhook-failures")
    assert failures[-1] == 6 and sum(failures) == 6
    assert 'id="total-webhook-failures">6<' in html


def test_the_tenant_pages_link_to_the_usage_page(admin_client, acme):
    listed = admin_client.get("/admin/tenants/tenant/").content.decode()
    assert f'href="{url(acme)}"' in listed
    change = admin_client.get(f"/admin/tenants/tenant/{acme.pk}/change/").content.decode()
    assert f'href="{url(acme)}" class="usage-link"' in change
