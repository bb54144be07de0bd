from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "chatsvc.messaging"
    label = "messaging"
