from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "chatsvc.realtime"
    label = "realtime"

    def ready(self):
        from chatsvc.realtime.revocation import connect_signals

        connect_signals()
