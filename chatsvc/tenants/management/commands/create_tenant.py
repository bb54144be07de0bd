import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from chatsvc.tenants.services import create_tenant


class Command(BaseCommand):
    help = "Create a tenant and print its key id, API key and signing secret (shown once)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--origin", action="append", default=[], help="allowed WebSocket origin (repeatable)"
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def handle(self, *args, slug, name, origin, json: bool, **options):
        try:
            issued = create_tenant(slug=slug, name=name, origins=origin)
        except ValidationError as exc:
            raise CommandError(f"cannot create tenant {slug!r}: {exc.message_dict}") from exc
        print_issued(self, issued, as_json=json)


def print_issued(command: BaseCommand, issued, *, as_json: bool) -> None:
    if as_json:
        command.stdout.write(json.dumps(issued.as_dict()))
        return
    for field, value in issued.as_dict().items():
        command.stdout.write(f"{field:15} {value}")
    command.stdout.write(
        command.style.WARNING("Store the API key and signing secret now: they are not shown again.")
    )
