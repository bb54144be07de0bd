"""Fault drills at a larger size than the tests: `make drills` prints one JSON line per drill.

Each drill: two `serve` processes sharing a private Redis, a worker, the
embedded AWS emulator, N resuming clients in one room and a steady
conversation; one fault a third of the way in (pub/sub connections killed,
Redis restarted, a web process SIGTERMed or SIGKILLed). The line says what
was sent, acknowledged and stored, how many acknowledged messages were lost,
how many deliveries were missing at the end, duplicates before
de-duplication, seq jumps seen live, and the longest pause clients saw.
The scenario code is tests/drills.py, which the integration tests assert on.

    python bench/drills.py [--clients 40] [--rate 50] [--seconds 10] [fault ...]
"""

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
import tests.bootstrap  # noqa: E402, F401 - the test environment's safe defaults

WORKDIR = Path(tempfile.mkdtemp(prefix="chatsvc-drills-"))
os.environ["DATABASE_URL"] = f"sqlite:///{WORKDIR / 'db.sqlite3'}"
os.environ.pop("REDIS_URL", None)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsvc.settings")


def main() -> None:
    from tests.drills import FAULTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("faults", nargs="*", help=f"some of {', '.join(FAULTS)} (default: all)")
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--rate", type=float, default=50.0, help="messages per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    if unknown := set(args.faults) - set(FAULTS):
        parser.error(f"unknown faults: {', '.join(sorted(unknown))}")
    args.faults = args.faults or list(FAULTS)

    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from moto.server import ThreadedMotoServer

    from chatsvc.aws import clients, provision
    from tests import factories
    from tests.conftest import free_port
    from tests.drills import Stack, run_drill
    from tests.servers import server_env
    from tests.worker.conftest import room_ids

    call_command("migrate", verbosity=0)
    port = free_port()
    emulator = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    emulator.start()
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{port}"
    queue_url, _ = provision.ensure_queue(clients.sqs(), "drills")
    provision.ensure_table(clients.dynamodb(), "drills")
    settings.CHAT_QUEUE_URL, settings.CHAT_TABLE_NAME = queue_url, "drills"
    aws = SimpleNamespace(endpoint=settings.AWS_ENDPOINT_URL, queue_url=queue_url, table="drills")
    env = server_env(database_url=os.environ["DATABASE_URL"], redis_url=None, aws=aws)
    issued = factories.tenant_with_key("drills", messages_per_second=1000)
    try:
        for fault in args.faults:
            directory = WORKDIR / fault
            directory.mkdir()
            stack = Stack.start(env=env, directory=directory)
            try:
                settings.REDIS_URL = stack.redis.url
                room = factories.room_for(issued).connection_id
                tokens = [
                    factories.token_for(issued, user_id=f"user{n}") for n in range(args.clients)
                ]
                result = asyncio.run(
                    run_drill(
                        fault,
                        stack=stack,
                        tokens=tokens,
                        room=room,
                        stored_ids=lambda room=room: room_ids(clients.dynamodb(), "drills", room),
                        rate=args.rate,
                        seconds=args.seconds,
                        settle_seconds=30,
                    )
                )
                print(result.line(), flush=True)
            finally:
                stack.stop()
    finally:
        emulator.stop()


if __name__ == "__main__":
    main()
