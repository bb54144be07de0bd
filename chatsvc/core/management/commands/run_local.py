"""Everything on embedded defaults in one command: emulator, web server, worker.

An AWS emulator (moto in server mode) on loopback is provisioned with the
same queue, DLQ and table shapes as cloudformation/; the web server (daphne)
and the queue worker run as child processes against it. Ctrl-C stops all.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from chatsvc.aws import clients, provision
from chatsvc.demo.setup import ensure_demo

QUEUE_NAME = "chatsvc-local"
STOP_TIMEOUT_SECONDS = 15


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Command(BaseCommand):
    help = "Run web server, queue worker and an embedded AWS emulator (local mode)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--aws-port", type=int, default=0, help="emulator port (0: any free)")

    def handle(self, *args, host, port, aws_port, **options):
        from moto.server import ThreadedMotoServer

        Path(settings.VAR_DIR).mkdir(exist_ok=True)
        aws_port = aws_port or free_port()
        endpoint = f"http://127.0.0.1:{aws_port}"
        emulator = ThreadedMotoServer(ip_address="127.0.0.1", port=aws_port, verbose=False)
        emulator.start()
        children: list[subprocess.Popen] = []
        try:
            env = self._environment(endpoint)
            call_command("migrate", interactive=False, verbosity=0)
            _, room, issued = ensure_demo(reissue_key=True)
            children.append(self._spawn_web(env, host, port))
            children.append(self._spawn_worker(env))
            self._announce(host, port, endpoint, room, issued)
            self._wait(children)
        finally:
            self._stop(children)
            emulator.stop()
            self.stdout.write("stopped.")

    def _environment(self, endpoint: str) -> dict:
        env = os.environ.copy()
        env.setdefault("AWS_ACCESS_KEY_ID", "local")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "local")
        env.update(AWS_ENDPOINT_URL=endpoint, DEBUG="true")
        env.setdefault("LOG_FORMAT", "console")
        env.setdefault("CHAT_DRAIN_SECONDS", "1")  # Ctrl-C should not take a deploy's drain
        # Commands run in their own process here, and the in-memory channel layer
        # reaches no other: the revocation sweep is what tells the web server.
        env.setdefault("CHAT_REVALIDATE_SECONDS", "2")
        os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})
        settings.AWS_ENDPOINT_URL = endpoint
        queue_url, _ = provision.ensure_queue(clients.sqs(), QUEUE_NAME)
        provision.ensure_table(clients.dynamodb(), settings.CHAT_TABLE_NAME)
        env.update(CHAT_QUEUE_URL=queue_url, CHAT_TABLE_NAME=settings.CHAT_TABLE_NAME)
        return env

    def _spawn_web(self, env, host, port) -> subprocess.Popen:
        command = [sys.executable, "manage.py", "serve", "--host", host, "--port", str(port)]
        return self._spawn(command, env)

    def _spawn_worker(self, env) -> subprocess.Popen:
        # A short long-poll: Ctrl-C should not wait 20 s for an idle receive.
        command = [sys.executable, "manage.py", "consume_queue", "--wait-seconds", "2"]
        return self._spawn(command, env)

    def _spawn(self, command, env) -> subprocess.Popen:
        # A session of their own: Ctrl-C reaches this process only, which then
        # stops the children once, gracefully, with SIGTERM.
        return subprocess.Popen(  # noqa: S603
            command, env=env, cwd=settings.BASE_DIR, start_new_session=True
        )

    def _announce(self, host, port, endpoint, room, issued) -> None:
        base = f"http://{host}:{port}"
        lines = [
            "",
            f"chatsvc is running on embedded defaults at {base}",
            f"  demo chat (open two tabs): {base}/demo/",
            f"  REST API docs:             {base}/api/v1/docs",
            f"  admin:                     {base}/admin/  (create a user: "
            "python manage.py createsuperuser)",
            f"  AWS emulator:              {endpoint}",
            f"  demo room ConnectionId:    {room.connection_id}",
        ]
        if issued:
            lines.append(f"  demo tenant API key:       {issued.api_key}")
        lines.append("Press Ctrl-C to stop.")
        self.stdout.write("\n".join(lines))

    def _wait(self, children) -> None:
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(0.5):
            for child in children:
                if child.poll() is not None:
                    self.stderr.write(f"{child.args[2]} exited with {child.returncode}")
                    return

    def _stop(self, children) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                child.kill()
