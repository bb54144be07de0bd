from django.apps import AppConfig


class ApiConfig(AppConfig):
    name = "chatsvc.api"
    label = "api"
