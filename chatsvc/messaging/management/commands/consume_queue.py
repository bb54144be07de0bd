"""`manage.py consume_queue`: persist the chat queue into DynamoDB (the worker role)."""

import logging
import os
import signal

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chatsvc.aws import clients
from chatsvc.core.startup import assert_safe_for_production
from chatsvc.messaging import worker
from chatsvc.webhooks import sender as webhook_sender

logger = logging.getLogger("chatsvc.messaging.worker")


class Command(BaseCommand):
    help = (
        "Long-poll the chat queue and store its messages in DynamoDB. "
        "SIGTERM/SIGINT finish the batches in flight and exit 0; a second signal exits at once."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--pollers",
            type=int,
            default=getattr(settings, "CHAT_WORKER_POLLERS", 1),
            help="receive/store threads in this process (default 1, or CHAT_WORKER_POLLERS)",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=worker.DEFAULT_BATCH_SIZE,
            help=f"messages per batch, 1..{worker.MAX_BATCH_SIZE} "
            f"(default {worker.DEFAULT_BATCH_SIZE}: 5 full receives, 2 full BatchWriteItem)",
        )
        parser.add_argument(
            "--linger-ms",
            type=int,
            default=getattr(settings, "CHAT_WORKER_LINGER_MS", 500),
            help="longest wait of a message for its batch to fill "
            "(default 500, or CHAT_WORKER_LINGER_MS)",
        )
        parser.add_argument(
            "--wait-seconds",
            type=int,
            default=worker.SQS_MAX_WAIT_SECONDS,
            help="long-poll wait of an empty batch's receive, 0..20 (default 20)",
        )
        parser.add_argument(
            "--write-timeout",
            type=float,
            default=10.0,
            help="seconds to retry DynamoDB for one batch before leaving it to SQS (default 10)",
        )
        parser.add_argument(
            "--once",
            action="store_true",
            help="drain mode: exit 0 once a receive finds the queue empty",
        )

    def handle(self, *args, **options):
        assert_safe_for_production()
        try:
            worker_options = worker.WorkerOptions(
                queue_url=settings.CHAT_QUEUE_URL,
                table=settings.CHAT_TABLE_NAME,
                pollers=options["pollers"],
                batch_size=options["batch_size"],
                linger=options["linger_ms"] / 1000,
                wait_seconds=options["wait_seconds"],
                write_timeout=options["write_timeout"],
                once=options["once"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        consumer = worker.QueueWorker(
            options=worker_options, sqs=clients.sqs(), dynamodb=clients.dynamodb()
        )
        # Webhook deliveries go out from this process too (not in drain mode):
        # its own threads, so a slow endpoint never holds up the queue.
        webhooks = None
        if settings.CHAT_WEBHOOK_IN_WORKER and not options["once"]:
            webhooks = webhook_sender.start_in_thread()

        def request_stop(signum, frame):
            name = signal.Signals(signum).name
            if consumer.stopping:
                # A second signal means now. Safe: whatever was not deleted from
                # SQS is delivered again and rewritten idempotently.
                logger.warning(
                    "stopping now, unfinished batches return to the queue", extra={"signal": name}
                )
                logging.shutdown()
                os._exit(128 + signum)
            logger.info("stopping", extra={"signal": name})
            consumer.stop()
            if webhooks:
                webhooks[0].stop()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        try:
            consumer.run()
        except (ClientError, BotoCoreError) as exc:
            # Only the start-up call (the queue's attributes) gets here: bad configuration.
            raise CommandError(f"cannot read queue {settings.CHAT_QUEUE_URL}: {exc}") from exc
        finally:
            if webhooks:  # sends in flight finish, each within its timeout
                webhooks[0].stop()
                webhooks[1].join(webhook_sender.STOP_TIMEOUT_SECONDS)
        if consumer.gave_up:
            raise CommandError(
                f"gave up draining {settings.CHAT_QUEUE_URL}: "
                f"{worker.ONCE_MAX_RECEIVE_FAILURES} receives in a row failed"
            )
