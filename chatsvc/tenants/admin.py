from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.db.models import Count, Q
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from chatsvc.tenants import services
from chatsvc.tenants.models import Tenant, TenantKey


def show_issued(request, issued_keys, title):
    """The one page that ever shows an API key and signing secret."""
    response = TemplateResponse(
        request,
        "admin/tenants/issued_keys.html",
        {
            "title": title,
            "issued": [k.as_dict() for k in issued_keys],
            **admin.site.each_context(request),
        },
    )
    response["Cache-Control"] = "no-store"
    return response


class TenantKeyInline(admin.TabularInline):
    model = TenantKey
    fields = ("key_id", "created_at", "revoked_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = (
        "slug",
        "name",
        "is_active",
        "active_keys",
        "messages_per_second",
        "created_at",
        "usage_link",
    )
    list_filter = ("is_active",)
    search_fields = ("slug", "name", "id")
    readonly_fields = ("id", "created_at")
    inlines = [TenantKeyInline]
    actions = ["rotate_key", "deactivate", "activate"]
    # An object-tools "Usage" button to the usage page (chatsvc.usage).
    change_form_template = "admin/usage/tenant_change_form.html"

    def get_urls(self):
        usage = path(
            "<path:object_id>/usage/",
            self.admin_site.admin_view(self.usage_view),
            name="tenants_tenant_usage",
        )
        return [usage, *super().get_urls()]  # before the catch-all "<object_id>/"

    def usage_view(self, request, object_id):
        from chatsvc.usage.views import tenant_usage

        return tenant_usage(self, request, object_id)

    @admin.display(description="usage")
    def usage_link(self, obj):
        url = reverse("admin:tenants_tenant_usage", args=[quote(obj.pk)])
        return format_html('<a href="{}">charts</a>', url)

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(_active_keys=Count("keys", filter=Q(keys__revoked_at=None)))
        )

    @admin.display(description="active keys", ordering="_active_keys")
    def active_keys(self, obj):
        return obj._active_keys

    def response_add(self, request, obj, post_url_continue=None):
        issued = services.issue_key(tenant=obj)
        return show_issued(request, [issued], f"Tenant {obj.slug} created")

    @admin.action(description="Rotate key (issue a new one; older keys stay until revoked)")
    def rotate_key(self, request, queryset):
        issued = [services.rotate_key(tenant=tenant) for tenant in queryset]
        return show_issued(request, issued, "New keys issued")

    @admin.action(description="Deactivate selected tenants")
    def deactivate(self, request, queryset):
        for tenant in queryset:
            services.set_active(tenant=tenant, active=False)
        self.message_user(request, f"{queryset.count()} tenant(s) deactivated.", messages.WARNING)

    @admin.action(description="Activate selected tenants")
    def activate(self, request, queryset):
        for tenant in queryset:
            services.set_active(tenant=tenant, active=True)
        self.message_user(request, f"{queryset.count()} tenant(s) activated.")


@admin.register(TenantKey)
class TenantKeyAdmin(admin.ModelAdmin):
    list_display = ("key_id", "tenant", "created_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter), "tenant")
    search_fields = ("key_id", "tenant__slug")
    fields = ("tenant", "key_id", "created_at", "revoked_at")
    readonly_fields = fields
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for key in queryset:
            services.revoke_key(key=key)
        self.message_user(request, f"{queryset.count()} key(s) revoked.", messages.WARNING)
