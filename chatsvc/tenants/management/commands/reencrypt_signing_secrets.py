from django.core.management.base import BaseCommand, CommandError

from chatsvc.tenants.services import reencrypt_signing_secrets


class Command(BaseCommand):
    help = (
        "Re-encrypt every tenant signing secret under the current SECRET_KEY, so an old "
        "key can be dropped from SECRET_KEY_FALLBACKS without tenants rotating keys."
    )

    def handle(self, *args, **options):
        done, unreadable = reencrypt_signing_secrets()
        self.stdout.write(f"re-encrypted {done} signing secrets")
        if unreadable:
            raise CommandError(
                f"{len(unreadable)} signing secrets cannot be read with SECRET_KEY or its "
                f"fallbacks (keys {', '.join(unreadable)}): keep the old key, or rotate them"
            )
