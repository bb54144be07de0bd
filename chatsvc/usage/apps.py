from django.apps import AppConfig


class UsageConfig(AppConfig):
    name = "chatsvc.usage"
    label = "usage"
    verbose_name = "Usage"
