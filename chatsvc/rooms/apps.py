from django.apps import AppConfig


class RoomsConfig(AppConfig):
    name = "chatsvc.rooms"
    label = "rooms"
