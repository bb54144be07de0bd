from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from chatsvc.tenants.management.commands.create_tenant import add_output_arguments, print_issued
from chatsvc.tenants.models import Tenant
from chatsvc.tenants.services import rotate_key


class Command(BaseCommand):
    help = (
        "Issue a new key for a tenant. Older keys stay valid until revoked "
        "(in the admin, or with --revoke-others) so clients can move over."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--revoke-others", action="store_true")
        add_output_arguments(parser)

    def handle(self, *args, slug, revoke_others, json: bool, store_api_key_in: str, **options):
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"no tenant with slug {slug!r}")
        with transaction.atomic():  # a key that cannot be stored is not issued either
            issued = rotate_key(tenant=tenant, revoke_others=revoke_others)
            print_issued(self, issued, as_json=json, secret_id=store_api_key_in)
