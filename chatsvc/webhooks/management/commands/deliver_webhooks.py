"""`manage.py deliver_webhooks`: send due webhook deliveries until SIGTERM.

The worker role (`consume_queue`) already runs a sender in a thread; this
command is for running one on its own, and `--once` for scripts and tests.
"""

import logging
import signal

from django.core.management.base import BaseCommand

from chatsvc.webhooks.sender import Sender

logger = logging.getLogger("chatsvc.webhooks.sender")


class Command(BaseCommand):
    help = (
        "Send due webhook deliveries until SIGTERM/SIGINT (sends in flight finish). "
        "--once: send what is due now, then exit."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--once", action="store_true", help="exit once nothing is due (retries come later)"
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=None,
            help="sending threads (default CHAT_WEBHOOK_SENDER_THREADS, 4)",
        )

    def handle(self, *args, once, threads, **options):
        sender = Sender(threads=threads)

        def request_stop(signum, frame):
            logger.info("stopping", extra={"signal": signal.Signals(signum).name})
            sender.stop()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        sender.run(once=once)
        if once:
            self.stdout.write(f"sent {sender.sent}, delivered {sender.delivered}")
