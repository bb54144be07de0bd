from django.core.management.base import BaseCommand, CommandError

from chatsvc.tenants.management.commands.create_tenant import print_issued
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
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, slug, revoke_others, json: bool, **options):
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"no tenant with slug {slug!r}")
        print_issued(self, rotate_key(tenant=tenant, revoke_others=revoke_others), as_json=json)
