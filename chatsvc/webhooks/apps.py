from django.apps import AppConfig


class WebhooksConfig(AppConfig):
    name = "chatsvc.webhooks"
    label = "webhooks"

    def ready(self):
        from chatsvc.webhooks import outbox

        outbox.connect_signals()
