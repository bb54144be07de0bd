from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "chatsvc.tenants"
    label = "tenants"
