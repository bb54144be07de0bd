import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from chatsvc.tenants.services import create_tenant


class Command(BaseCommand):
    help = (
        "Create a tenant and print its key id, API key and signing secret (shown once), "
        "or store the API key in Secrets Manager (--store-api-key-in)."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--origin", action="append", default=[], help="allowed WebSocket origin (repeatable)"
        )
        add_output_arguments(parser)

    def handle(self, *args, slug, name, origin, json: bool, store_api_key_in: str, **options):
        # One transaction: a key that cannot be stored is not created either.
        with transaction.atomic():
            try:
                issued = create_tenant(slug=slug, name=name, origins=origin)
            except ValidationError as exc:
                raise CommandError(f"cannot create tenant {slug!r}: {exc.message_dict}") from exc
            print_issued(self, issued, as_json=json, secret_id=store_api_key_in)


def add_output_arguments(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--store-api-key-in",
        default="",
        metavar="SECRET_ID",
        help=(
            "put the API key into this Secrets Manager secret and print neither it nor "
            "the signing secret (for a one-off task whose output goes to CloudWatch Logs)"
        ),
    )


def print_issued(command: BaseCommand, issued, *, as_json: bool, secret_id: str = "") -> None:
    fields = issued.as_dict()
    if secret_id:
        store_api_key(secret_id, fields["api_key"])
        # Nothing secret reaches the output: the log stream may be read by many.
        fields = {k: v for k, v in fields.items() if k not in ("api_key", "signing_secret")}
        fields["api_key_stored_in"] = secret_id
    if as_json:
        command.stdout.write(json.dumps(fields))
        return
    for field, value in fields.items():
        command.stdout.write(f"{field:17} {value}")
    if not secret_id:
        command.stdout.write(
            command.style.WARNING(
                "Store the API key and signing secret now: they are not shown again."
            )
        )


def store_api_key(secret_id: str, api_key: str) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    from chatsvc.aws import clients

    try:
        clients.client("secretsmanager").put_secret_value(SecretId=secret_id, SecretString=api_key)
    except (BotoCoreError, ClientError) as exc:
        raise CommandError(
            f"cannot store the API key in {secret_id}: {exc}; nothing was created"
        ) from exc
