from django.apps import AppConfig


class DemoConfig(AppConfig):
    name = "chatsvc.demo"
    label = "demo"
