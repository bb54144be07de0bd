from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "chatsvc.realtime"
    label = "realtime"

    def ready(self):
        from chatsvc.realtime import directory, revocation

        revocation.connect_signals()
        directory.connect_signals()
