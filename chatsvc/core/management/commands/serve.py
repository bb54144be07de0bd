"""The web role: daphne with a graceful SIGTERM.

On SIGTERM (ECS stopping a task) or SIGINT the server stops accepting
connections, closes every WebSocket with 1012 (service restart) at random
moments spread over CHAT_DRAIN_SECONDS so clients reconnect elsewhere without
a stampede (and resume with `since`), waits for in-flight sends, flushes
pending SQS batches, and only then stops the reactor. The whole drain takes
at most CHAT_DRAIN_SECONDS + CHAT_SEND_DEADLINE_SECONDS + a few seconds;
docs/deployment.md aligns the ECS stop timeout with it.

With --workers N (default: CHAT_WEB_WORKERS, else one per available CPU) and
N > 1 the command binds the port and becomes a supervisor of N such servers on
it (chatsvc/core/workers.py); --workers 1 is the single process described above.
"""

import asyncio
import gc
import logging
import signal
from typing import NoReturn

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from chatsvc.core import workers as supervision
from chatsvc.core.event_loop import loop_name

logger = logging.getLogger("chatsvc.serve")
FLUSH_MARGIN_SECONDS = 3
STOP_MARGIN_SECONDS = 5  # the supervisor's wait for its children, beyond their drain
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
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help="server processes on the port (default CHAT_WEB_WORKERS; 0: one per "
            "available CPU); more than 1 needs REDIS_URL",
        )

    def handle(self, *args, host, port, fd, workers, **options):
        count = worker_count(workers)
        if count > 1:
            supervise(count, host, port, fd)  # replaces this process
        self.serve(host, port, fd)

    def serve(self, host, port, fd):
        supervision.follow_supervisor()
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
            # Twisted's default backlog (50) overflowed in a reconnect storm: dropped
            # SYNs are retried by clients after 1 s, 3 s, ... (bench/fanout.py reconnect).
            endpoint = f"tcp:port={port}:interface={host}:backlog={supervision.LISTEN_BACKLOG}"
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
            loop = loop_name(asyncio.get_event_loop())
            logger.info("serving on %s:%s", host, port, extra={"event_loop": loop})
            if settings.CHAT_UVLOOP and loop != "uvloop":
                logger.warning("CHAT_UVLOOP is set but the loop is %s: start with manage.py", loop)
            if settings.CHAT_TARGET_GROUP_ARN:
                watching.append(asyncio.ensure_future(watch_target(port)))

        reactor.callWhenRunning(install_handlers)
        freeze_startup_heap()
        server.run()
        if listen_failures:
            hint = "" if fd is not None else " Another process may hold the port: use --port."
            raise CommandError(f"{listen_failures[0]}{hint}")


def worker_count(requested: int | None) -> int:
    """--workers, else CHAT_WEB_WORKERS; 0 means one per available CPU.

    Without Redis rooms live in one process's memory: a number asked for is
    refused, the per-CPU default falls back to one process.
    """
    asked = settings.CHAT_WEB_WORKERS if requested is None else requested
    if asked < 0:
        raise CommandError(f"--workers / CHAT_WEB_WORKERS must be 0 or more, not {asked}")
    count = asked or supervision.available_cpus()
    if count == 1 or settings.REDIS_URL:
        return count
    if asked:
        raise CommandError(
            f"{count} web workers need Redis (REDIS_URL): without it room streams and the "
            "channel layer are in-memory, per process, and cannot be shared. "
            "Use --workers 1 (or CHAT_WEB_WORKERS=1)."
        )
    logger.warning("REDIS_URL is not set: serving with 1 process instead of %d", count)
    return 1


def supervise(count: int, host: str, port: int, fd: int | None) -> NoReturn:
    """Bind here (a taken port is a CommandError, as with one process), then exec."""
    if fd is None:
        try:
            listener = supervision.listen(host, port)
        except OSError as exc:
            raise CommandError(
                f"cannot listen on {host}:{port}: {exc.strerror}. "
                "Another process may hold the port: use --port."
            ) from exc
        fd, port = listener.fileno(), listener.getsockname()[1]
    supervision.exec_supervisor(
        workers=count,
        fd=fd,
        host=host,
        port=port,
        stop_seconds=settings.CHAT_DRAIN_SECONDS
        + settings.CHAT_SEND_DEADLINE_SECONDS
        + FLUSH_MARGIN_SECONDS
        + STOP_MARGIN_SECONDS,
        log_format=settings.LOG_FORMAT,
        log_level=settings.LOG_LEVEL,
        base_dir=settings.BASE_DIR,
    )


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
