"""Everything on embedded defaults in one command: emulator, web server, worker.

An AWS emulator (moto in server mode) on loopback is provisioned with the
same queue, DLQ, table and attachments bucket shapes as cloudformation/; the web server (daphne)
and the queue worker run as child processes against it. Ctrl-C stops all.

The web port is bound first, here, and handed to the web server: a port that
another process holds stops the command at once (exit 1, with a hint) instead
of printing URLs that reach someone else's service. The banner is printed
only once the web server answers /readyz on that port.
"""

import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from chatsvc.aws import clients, provision
from chatsvc.core import workers
from chatsvc.demo.setup import ensure_demo

QUEUE_NAME = "chatsvc-local"
STOP_TIMEOUT_SECONDS = 15
READY_TIMEOUT_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listen(host: str, port: int) -> socket.socket:
    """A listening IPv4 socket on host:port, or a CommandError that says what to do."""
    try:
        return workers.listen(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            other = 8100 if port != 8100 else 8200
            raise CommandError(
                f"port {port} on {host} is already in use by another process; chatsvc did "
                f"not start. Stop that process or choose a free port: make run PORT={other} "
                f"(or manage.py run_local --port {other})."
            ) from exc
        raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


def local_url(host: str, port: int) -> str:
    """Where to reach host:port from this machine (the wildcard address means loopback)."""
    if host in ("0.0.0.0", ""):  # noqa: S104 - only compared, never bound here
        host = "127.0.0.1"
    return f"http://{host}:{port}"


class Command(BaseCommand):
    help = "Run web server, queue worker and an embedded AWS emulator (local mode)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1", help="an IPv4 address")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--aws-port", type=int, default=0, help="emulator port (0: any free)")

    def handle(self, *args, host, port, aws_port, **options):
        from moto.server import ThreadedMotoServer

        # Bind before anything else: a busy port fails here, in a second.
        web_socket = listen(host, port)
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        Path(settings.VAR_DIR).mkdir(exist_ok=True)
        aws_port = aws_port or free_port()
        endpoint = f"http://127.0.0.1:{aws_port}"
        emulator = ThreadedMotoServer(ip_address="127.0.0.1", port=aws_port, verbose=False)
        emulator.start()
        children: list[subprocess.Popen] = []
        try:
            env = self._environment(endpoint, local_url(host, port))
            call_command("migrate", interactive=False, verbosity=0)
            _, room, issued = ensure_demo(reissue_key=True)
            with web_socket:
                children.append(self._spawn_web(env, host, port, web_socket))
            children.append(self._spawn_worker(env))
            if not self._wait_ready(local_url(host, port), children, stop):
                return
            self._announce(local_url(host, port), endpoint, room, issued)
            self._wait(children, stop)
        finally:
            web_socket.close()
            self._stop(children)
            emulator.stop()
            self.stdout.write("stopped.")

    def _environment(self, endpoint: str, origin: str) -> dict:
        env = os.environ.copy()
        env.setdefault("AWS_ACCESS_KEY_ID", "local")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        env.update(AWS_ENDPOINT_URL=endpoint, DEBUG="true")
        env.setdefault("LOG_FORMAT", "console")
        env.setdefault("CHAT_DRAIN_SECONDS", "1")  # Ctrl-C should not take a deploy's drain
        # Commands run in their own process here, and the in-memory channel layer
        # reaches no other: the revocation sweep is what tells the web server.
        env.setdefault("CHAT_REVALIDATE_SECONDS", "2")
        # Webhooks (sent by the worker) may go to a receiver on this machine.
        env.setdefault("CHAT_WEBHOOK_ALLOW_PRIVATE", "true")
        os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
        settings.AWS_ENDPOINT_URL = endpoint
        queue_url, _ = provision.ensure_queue(clients.sqs(), QUEUE_NAME)
        provision.ensure_table(clients.dynamodb(), settings.CHAT_TABLE_NAME)
        # Attachments: the browser (the demo page's origin) uploads straight to it.
        origins = [origin, origin.replace("127.0.0.1", "localhost")]
        bucket = settings.CHAT_ATTACHMENTS_BUCKET
        provision.ensure_bucket(clients.client("s3"), bucket, cors_origins=sorted(set(origins)))
        env.update(CHAT_QUEUE_URL=queue_url, CHAT_TABLE_NAME=settings.CHAT_TABLE_NAME)
        env.update(CHAT_ATTACHMENTS_BUCKET=bucket)
        return env

    def _spawn_web(self, env, host, port, web_socket) -> subprocess.Popen:
        # The web server adopts the socket bound above (the parent's copy is
        # closed right after), so nothing can take the port in between.
        fd = web_socket.fileno()
        command = [sys.executable, "manage.py", "serve", "--host", host, "--port", str(port)]
        # One web process: local mode's room streams and channel layer live in it.
        command += ["--fd", str(fd), "--workers", "1"]
        return self._spawn(command, env, pass_fds=(fd,))

    def _spawn_worker(self, env) -> subprocess.Popen:
        # A short long-poll: Ctrl-C should not wait 20 s for an idle receive.
        command = [sys.executable, "manage.py", "consume_queue", "--wait-seconds", "2"]
        return self._spawn(command, env)

    def _spawn(self, command, env, pass_fds=()) -> subprocess.Popen:
        # A session of their own: Ctrl-C reaches this process only, which then
        # stops the children once, gracefully, with SIGTERM.
        return subprocess.Popen(  # noqa: S603
            command, env=env, cwd=settings.BASE_DIR, start_new_session=True, pass_fds=pass_fds
        )

    def _wait_ready(self, base, children, stop) -> bool:
        """Poll /readyz until it answers 200; False when stopped (Ctrl-C) first."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not stop.is_set():
            self._check_children(children)
            try:
                with urllib.request.urlopen(base + "/readyz", timeout=3) as response:  # noqa: S310
                    if response.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise CommandError(f"the web server did not become ready at {base}/readyz")
            stop.wait(0.25)
        return False

    def _check_children(self, children) -> None:
        for child in children:
            if child.poll() is not None:
                raise CommandError(f"{child.args[2]} exited with {child.returncode}")

    def _announce(self, base, endpoint, room, issued) -> None:
        python = sys.executable
        if Path(python).is_relative_to(settings.BASE_DIR):
            python = os.path.relpath(python, settings.BASE_DIR)
        lines = [
            "",
            f"chatsvc is running on embedded defaults at {base}",
            f"  demo chat (open two tabs): {base}/demo/",
            f"  REST API docs:             {base}/api/v1/docs",
            f"  admin:                     {base}/admin/  (create a user: "
            f"{python} manage.py createsuperuser)",
            f"  AWS emulator:              {endpoint}",
            f"  demo room ConnectionId:    {room.connection_id}",
        ]
        if issued:
            lines.append(f"  demo tenant API key:       {issued.api_key}")
            lines.append("  (a new demo key on every start; the previous one is revoked)")
        lines.append("Press Ctrl-C to stop.")
        self.stdout.write("\n".join(lines))

    def _wait(self, children, stop) -> None:
        while not stop.wait(0.5):
            self._check_children(children)

    def _stop(self, children) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
