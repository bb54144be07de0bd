"""Platforms are registered per tenant: django-lti's registration form, with the
chatsvc tenant (and room rules) and the deployments inline."""

from django import forms
from django.contrib import admin
from lti_tool.admin import LtiRegistrationAdmin as BaseRegistrationAdmin
from lti_tool.models import LtiDeployment, LtiRegistration

from chatsvc.lti.models import CourseRoom, Platform


class PlatformInline(admin.StackedInline):
    model = Platform
    fields = ("tenant", "room_per_resource_link", "frame_origins")
    min_num = 1
    max_num = 1
    can_delete = False
    verbose_name = "chatsvc tenant"
    verbose_name_plural = "chatsvc tenant (launches belong to it only)"


class DeploymentForm(forms.ModelForm):
    class Meta:
        model = LtiDeployment
        fields = ("deployment_id", "is_active")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.instance.pk is None:  # an id typed in by an operator is meant to work
            self.fields["is_active"].initial = True


class DeploymentInline(admin.TabularInline):
    model = LtiDeployment
    form = DeploymentForm
    fields = ("deployment_id", "is_active", "datetime_created")
    readonly_fields = ("datetime_created",)
    extra = 1
    verbose_name_plural = (
        "deployments (launches from an unknown deployment id are refused and listed "
        "here inactive: tick 'is active' to accept them)"
    )


admin.site.unregister(LtiRegistration)


@admin.register(LtiRegistration)
class LtiRegistrationAdmin(BaseRegistrationAdmin):
    list_display = ["name", "tenant", "issuer", "client_id", "is_active"]
    list_select_related = ["chatsvc__tenant"]
    inlines = [PlatformInline, DeploymentInline]

    @admin.display(description="tenant", ordering="chatsvc__tenant__slug")
    def tenant(self, obj):
        platform = getattr(obj, "chatsvc", None)
        return platform.tenant if platform else "—"


@admin.register(CourseRoom)
class CourseRoomAdmin(admin.ModelAdmin):
    list_display = ("room", "tenant", "context_id", "resource_link_id", "created_at")
    list_filter = ("tenant",)
    search_fields = ("context_id", "resource_link_id", "room__connection_id", "room__title")
    list_select_related = ("room", "tenant")
    readonly_fields = (
        "platform",
        "tenant",
        "deployment_id",
        "context_id",
        "resource_link_id",
        "room",
        "created_at",
    )

    def has_add_permission(self, request):
        return False
