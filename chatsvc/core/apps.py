from django.apps import AppConfig


class CoreConfig(AppConfig):
    name = "chatsvc.core"
    label = "core"

    def ready(self):
        from chatsvc.core import login_throttle, startup  # noqa: F401 - registers the deploy check

        login_throttle.connect_signals()
