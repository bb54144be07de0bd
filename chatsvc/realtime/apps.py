from django.apps import AppConfig


class RealtimeConfig(AppConfig):
    name = "chatsvc.realtime"
    label = "realtime"
