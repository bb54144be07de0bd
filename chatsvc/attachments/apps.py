from django.apps import AppConfig


class AttachmentsConfig(AppConfig):
    name = "chatsvc.attachments"
    label = "attachments"

    def ready(self):
        from chatsvc.attachments import signals  # noqa: F401  (connects the receivers)
