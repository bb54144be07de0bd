"""Real server processes for integration and end-to-end tests."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from chatsvc.settings import BASE_DIR
from tests.conftest import free_port

# Variables of the test run that must not leak into an embedded-mode service.
NOT_EMBEDDED = ("REDIS_URL", "DATABASE_URL", "AWS_ENDPOINT_URL", "CHAT_QUEUE_URL")


def manage(*args: str, env: dict) -> subprocess.CompletedProcess:
    """A `manage.py` command run to its end (one that should refuse to start)."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


class ServerProcess:
    """A `manage.py` command serving HTTP in a child process, stopped with a signal."""

    def __init__(
        self, *, args: list[str], port: int, env: dict, log: Path, stop_signal=signal.SIGTERM
    ):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws/v1/"
        self.log_path = log
        self.stop_signal = stop_signal
        self.log = open(log, "ab")
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    @classmethod
    def serve(cls, *, env: dict, log: Path, workers: int | None = 1) -> "ServerProcess":
        """The web role (`manage.py serve --workers 1`: one process, as the tests were
        written for); `workers=N` for N processes, None for the command's own default."""
        port = free_port()
        args = ["serve", "--host", "127.0.0.1", "--port", str(port)]
        if workers is not None:
            args += ["--workers", str(workers)]
        return cls(args=args, port=port, env=env, log=log)

    @classmethod
    def run_local(cls, *, database: Path, log: Path) -> "ServerProcess":
        """The embedded mode as `make run` starts it, on its own SQLite file."""
        env = {k: v for k, v in os.environ.items() if k not in NOT_EMBEDDED}
        env["DATABASE_URL"] = f"sqlite:///{database}"
        port = free_port()
        return cls(
            args=["run_local", "--port", str(port)],
            port=port,
            env=env,
            log=log,
            stop_signal=signal.SIGINT,
        )

    def wait_ready(self, path="/healthz", timeout=60.0) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + path, timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.process.kill()
        raise TimeoutError(f"{path} not ready in {timeout}s:\n{self.log_path.read_text()}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


def server_env(*, database_url: str, redis_url: str | None, aws) -> dict:
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": os.environ["SECRET_KEY"],
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SECURE_SSL_REDIRECT": "false",
        "DATABASE_URL": database_url,
        "AWS_ENDPOINT_URL": aws.endpoint,
        "AWS_REGION": "us-east-1",
        "CHAT_QUEUE_URL": aws.queue_url,
        "CHAT_TABLE_NAME": aws.table,
        "LOG_LEVEL": "WARNING",
    }
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env
