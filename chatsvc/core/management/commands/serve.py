"""The web role: daphne with a graceful SIGTERM.

On SIGTERM (ECS stopping a task) or SIGINT the server stops accepting
connections, closes every WebSocket with 1012 (service restart) at random
moments spread over CHAT_DRAIN_SECONDS so clients reconnect elsewhere without
a stampede (and resume with `since`), waits for in-flight sends, flushes
pending SQS batches, and only then stops the reactor. The whole drain takes
at most CHAT_DRAIN_SECONDS + CHAT_SEND_DEADLINE_SECONDS + a few seconds;
docs/deployment.md aligns the ECS stop timeout with it.
"""

import asyncio
import gc
import logging
import signal

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

logger = logging.getLogger("chatsvc.serve")
FLUSH_MARGIN_SECONDS = 3
GC_YOUNG_THRESHOLD = 20_000


class Command(BaseCommand):
    help = "Serve HTTP and WebSocket (ASGI, daphne) with graceful shutdown."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="0.0.0.0")  # noqa: S104 - in a container
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--fd",
            type=int,
            default=None,
            help="serve on this inherited, already listening socket instead (run_local binds "
            "first); --host and --port then only name it in logs",
        )

    def handle(self, *args, host, port, fd, **options):
        # Importing daphne.server installs Twisted's asyncio reactor on a new loop;
        # with uvloop's policy that loop is uvloop's (C event loop, cheaper I/O).
        if settings.CHAT_UVLOOP:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        from daphne.server import Server
        from twisted.internet import reactor

        from chatsvc.asgi import application
        from chatsvc.core import http_guard, websocket_protocol

        websocket_protocol.install()
        http_guard.install(settings.CHAT_HEADER_TIMEOUT_SECONDS)

        listen_failures = []

        class DrainingServer(Server):
            def listen_success(self, listening_port):
                self.ports = [*getattr(self, "ports", []), listening_port]
                super().listen_success(listening_port)

            def listen_error(self, failure):
                # Daphne logs the failure and returns normally; a server that
                # could not listen must not exit 0 (its caller would think it ran).
                listen_failures.append(failure.getErrorMessage())
                super().listen_error(failure)

        if fd is None:
            endpoint = f"tcp:port={port}:interface={host}"
        else:
            endpoint = f"fd:fileno={fd}"  # daphne's fd endpoint: an IPv4 socket
        server = DrainingServer(
            application=application,
            endpoints=[endpoint],
            signal_handlers=False,
            proxy_forwarded_address_header="X-Forwarded-For",
            proxy_forwarded_port_header="X-Forwarded-Port",
            proxy_forwarded_proto_header="X-Forwarded-Proto",
            # Autobahn's own hard stop; the consumer closes 1009 on per-tenant limits.
            websocket_max_message_size=settings.CHAT_MAX_FRAME_BYTES * 4,
            websocket_max_frame_size=settings.CHAT_MAX_FRAME_BYTES * 4,
            ping_interval=20,
            ping_timeout=30,
            verbosity=0,
        )
        draining, watching = [], []

        def begin_drain():
            if not draining:
                draining.append(asyncio.ensure_future(drain(server, reactor)))

        def on_signal(signum, frame):
            reactor.callFromThread(begin_drain)

        def install_handlers():
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            logger.info("serving on %s:%s", host, port)
            if settings.CHAT_TARGET_GROUP_ARN:
                watching.append(asyncio.ensure_future(watch_target(port)))

        reactor.callWhenRunning(install_handlers)
        freeze_startup_heap()
        server.run()
        if listen_failures:
            hint = "" if fd is not None else " Another process may hold the port: use --port."
            raise CommandError(f"{listen_failures[0]}{hint}")


def freeze_startup_heap() -> None:
    """Load what every request needs, then exempt it from garbage collection.

    botocore's service models, Django and Twisted make a heap of long-lived
    objects; a full collection walks all of them and stalled fan-out for
    200+ ms (measured: docs/performance.md). Frozen objects are never scanned.
    """
    from chatsvc.aws import clients

    clients.sqs()
    clients.dynamodb()
    gc.collect()
    gc.freeze()
    # Young collections every 20,000 allocations instead of 700: each one costs
    # 5-20 ms with thousands of sockets' objects alive, so fewer, larger ones.
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)


async def watch_target(port: int) -> None:
    """Drain the sockets once the load balancer deregisters this task (drain_watch.py)."""
    from chatsvc.aws import clients
    from chatsvc.core.drain_watch import DrainWatch, task_address
    from chatsvc.realtime.consumer import CLOSE_RESTART, came_through_production, close_all_sockets

    address = settings.CHAT_TARGET_ADDRESS or await asyncio.to_thread(task_address, port)
    if address is None:
        logger.warning("CHAT_TARGET_GROUP_ARN is set but this task's address is unknown")
        return
    watch = DrainWatch(
        client=clients.client("elbv2"),
        target_group_arn=settings.CHAT_TARGET_GROUP_ARN,
        address=address,
        interval=settings.CHAT_DRAIN_WATCH_SECONDS,
        on_leaving=lambda: close_all_sockets(
            CLOSE_RESTART, spread_seconds=settings.CHAT_DRAIN_SECONDS
        ),
        on_demoted=lambda: close_all_sockets(
            CLOSE_RESTART,
            spread_seconds=settings.CHAT_DEMOTED_DRAIN_SECONDS,
            which=came_through_production,
        ),
    )
    try:
        await watch.run()
    except Exception:
        logger.exception("target watch failed")


async def drain(server, reactor) -> None:
    from chatsvc.messaging import runtime
    from chatsvc.realtime.consumer import close_all_sockets

    spread = settings.CHAT_DRAIN_SECONDS
    flush = settings.CHAT_SEND_DEADLINE_SECONDS + FLUSH_MARGIN_SECONDS
    logger.info("draining: sockets close with 1012 over %ss, then the queue flushes", spread)
    try:
        for listening_port in getattr(server, "ports", []):
            listening_port.stopListening()
        async with asyncio.timeout(spread + flush):
            await close_all_sockets(spread_seconds=spread)
            await runtime.shutdown(grace_seconds=flush)
    except TimeoutError:
        logger.error("drain did not finish in %ss", spread + flush)
    except Exception:
        logger.exception("drain failed")
    finally:
        reactor.stop()
