"""Webhook endpoints and their deliveries in the admin. The secret is shown once,
on the page after an endpoint is added (or its secret rotated), never again."""

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html

from chatsvc.tenants import secrets as tenant_secrets
from chatsvc.webhooks import services, signing, urls
from chatsvc.webhooks.models import WebhookDelivery, WebhookEndpoint
from chatsvc.webhooks.outbox import EVENT_TYPES


def show_secret(request, endpoint, secret, title):
    response = TemplateResponse(
        request,
        "admin/webhooks/secret.html",
        {
            "title": title,
            "endpoint": endpoint,
            "secret": secret,
            **admin.site.each_context(request),
        },
    )
    response["Cache-Control"] = "no-store"
    return response


class EndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=2048, assume_scheme="https")
    event_types = forms.MultipleChoiceField(
        choices=[(t, t) for t in EVENT_TYPES],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="None ticked: every event type.",
    )

    class Meta:
        model = WebhookEndpoint
        fields = ("tenant", "url", "event_types", "description", "is_enabled")

    def clean_url(self):
        url = self.cleaned_data["url"]
        try:
            return urls.check(url)
        except urls.UrlRefused as exc:
            raise forms.ValidationError(f"URL {exc}") from exc


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    form = EndpointForm
    list_display = (
        "id",
        "tenant",
        "url",
        "is_enabled",
        "consecutive_failures",
        "first_failure_at",
        "disabled_at",
        "pending",
        "failed",
        "deliveries_link",
    )
    list_filter = ("is_enabled", "tenant")
    search_fields = ("id", "url", "tenant__slug", "description")
    list_select_related = ("tenant",)
    readonly_fields = (
        "id",
        "created_at",
        "disabled_at",
        "disabled_reason",
        "consecutive_failures",
        "first_failure_at",
        "next_attempt_at",
    )
    actions = ["reenable", "rotate_secret"]

    def get_queryset(self, request):
        pending, failed = WebhookDelivery.Status.PENDING, WebhookDelivery.Status.FAILED
        return (
            super()
            .get_queryset(request)
            .annotate(
                _pending=Count("deliveries", filter=Q(deliveries__status=pending)),
                _failed=Count("deliveries", filter=Q(deliveries__status=failed)),
            )
        )

    @admin.display(description="pending", ordering="_pending")
    def pending(self, obj):
        return obj._pending

    @admin.display(description="failed", ordering="_failed")
    def failed(self, obj):
        return obj._failed

    @admin.display(description="deliveries")
    def deliveries_link(self, obj):
        url = reverse("admin:webhooks_webhookdelivery_changelist")
        return format_html('<a href="{}?endpoint__id__exact={}">deliveries</a>', url, obj.pk)

    def save_model(self, request, obj, form, change):
        if not change:
            obj._new_secret = signing.new_secret()
            obj.secret_encrypted = tenant_secrets.encrypt_secret(obj._new_secret)
        elif "is_enabled" in form.changed_data and obj.is_enabled:
            services._enable(obj)  # re-enabled by hand: a clean failure record
        super().save_model(request, obj, form, change)

    def response_add(self, request, obj, post_url_continue=None):
        return show_secret(request, obj, obj._new_secret, "Webhook endpoint created")

    @admin.action(description="Re-enable selected endpoints (failure counts reset)")
    def reenable(self, request, queryset):
        count = 0
        for endpoint in queryset:
            services.enable_endpoint(endpoint=endpoint)
            count += 1
        self.message_user(request, f"{count} endpoint(s) enabled.", messages.SUCCESS)

    @admin.action(description="Rotate the secret of one endpoint (shown once)")
    def rotate_secret(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one endpoint.", messages.ERROR)
            return None
        endpoint = queryset.get()
        secret = services.rotate_secret(endpoint=endpoint)
        return show_secret(request, endpoint, secret, "New webhook secret")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "event_type",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "created_at",
        "delivered_at",
    )
    list_filter = ("status", "event_type", "endpoint__tenant", "endpoint")
    search_fields = ("id", "event_id", "connection_id", "endpoint__id", "endpoint__url")
    list_select_related = ("endpoint",)
    readonly_fields = [f.name for f in WebhookDelivery._meta.fields]
    actions = ["replay"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description="Replay selected deliveries (send them again now)")
    def replay(self, request, queryset):
        count = services.replay(deliveries=list(queryset))
        self.message_user(request, f"{count} delivery(ies) queued again.", messages.SUCCESS)
