from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "chatsvc.core"
    label = "core"
