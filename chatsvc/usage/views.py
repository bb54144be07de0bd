"""The admin's usage page of one tenant: /admin/tenants/tenant/<id>/usage/.

Wired by chatsvc.tenants.admin.TenantAdmin.get_urls through the admin site's
`admin_view` (staff only, never cached); the tenant admin's view permission
is checked here.
"""

from datetime import datetime

from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.template.response import TemplateResponse

from chatsvc.usage import selectors
from chatsvc.usage.charts import Point, bar_chart, plain


def _label(moment: datetime, period: selectors.Period) -> str:
    return f"{moment:%Y-%m-%d %H:00}" if period is selectors.HOURS else f"{moment:%Y-%m-%d}"


def _tick(index: int, moment: datetime, period: selectors.Period) -> str | None:
    if period is selectors.HOURS:
        if moment.hour % 6:
            return None
        return f"{moment:%m-%d}" if moment.hour == 0 else f"{moment:%H:00}"
    return f"{moment:%m-%d}" if (period.buckets - 1 - index) % 5 == 0 else None


def _seconds(value: float) -> str:
    return f"{value:,.1f}"


CHARTS = [
    # id, title, Bucket attribute, unit, text when every value is 0, help
    ("messages", "Messages", "messages", "", "No messages in this period", "Stored messages."),
    (
        "active-users",
        "Active users",
        "active_users",
        "",
        "Nobody sent a message in this period",
        "Distinct users who sent a message in the hour (day).",
    ),
    (
        "live-sockets",
        "Live sockets",
        "max_live_sockets",
        "",
        "No live sockets sampled in this period",
        "Most open WebSockets at once, over all web processes (sampled every sweep).",
    ),
    (
        "webhook-failures",
        "Webhook failures",
        "webhook_failed_attempts",
        "",
        "No failed webhook attempts in this period",
        "Failed delivery attempts, by the hour (day) of the event.",
    ),
    (
        "queue-lag",
        "Queue lag",
        "max_queue_lag_seconds",
        "s",
        "No messages stored in this period",
        "Longest time from sending to stored in history (the queue and the worker).",
    ),
]


def tenant_usage(model_admin, request, object_id: str):
    tenant = model_admin.get_object(request, unquote(object_id))
    if tenant is None:
        raise Http404("No such tenant.")
    if not model_admin.has_view_permission(request, tenant):
        raise PermissionDenied
    period = selectors.PERIODS.get(request.GET.get("period", ""), selectors.HOURS)
    usage = selectors.tenant_usage(tenant=tenant, period=period)

    charts = []
    for chart_id, title, attribute, unit, empty, help_text in CHARTS:
        points = [
            Point(
                label=_label(b.start, period),
                value=getattr(b, attribute),
                tick=_tick(i, b.start, period),
            )
            for i, b in enumerate(usage.buckets)
        ]
        svg = bar_chart(
            points,
            chart_id=f"chart-{chart_id}",
            title=f"{title}, {period.name.lower()}",
            unit=unit,
            empty_text=empty,
            fmt=_seconds if unit == "s" else plain,
        )
        charts.append({"id": chart_id, "title": title, "help": help_text, "svg": svg})

    rows = [
        {"label": _label(b.start, period), "bucket": b}
        for b in reversed(usage.buckets)  # newest first
    ]
    live = "unknown (Redis unreachable)" if usage.live_now is None else f"{usage.live_now:,}"
    summary = [
        {"id": "live-now", "label": "Live sockets now", "value": live},
        {"id": "total-messages", "label": "Messages", "value": plain(usage.total("messages"))},
        {
            "id": "peak-users",
            "label": f"Most active users in {'an hour' if period is selectors.HOURS else 'a day'}",
            "value": plain(usage.peak("active_users")),
        },
        {
            "id": "total-webhook-failures",
            "label": "Failed webhook attempts",
            "value": plain(usage.total("webhook_failed_attempts")),
        },
        {
            "id": "disabled-endpoints",
            "label": "Webhook endpoints disabled now",
            "value": plain(len(usage.disabled_endpoints)),
        },
    ]
    context = {
        "summary": summary,
        **model_admin.admin_site.each_context(request),
        "title": f"Usage of {tenant.slug}",
        "subtitle": period.name,
        "opts": model_admin.model._meta,
        "tenant": tenant,
        "usage": usage,
        "period": period,
        "periods": list(selectors.PERIODS.values()),
        "charts": charts,
        "rows": rows,
    }
    return TemplateResponse(request, "admin/usage/tenant_usage.html", context)
