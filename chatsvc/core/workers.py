"""Several web processes on one port: `manage.py serve --workers N`.

One process runs Python on one core at a time (the GIL; each web process is one
asyncio loop), so a task with N vCPUs runs N processes. Redis (channel layer,
room streams) already makes processes one service, as it does separate tasks;
nothing else is shared.

`serve` binds the port, then replaces itself (exec, same pid: PID 1 in the
container) with this module's supervisor, a fresh interpreter that imports no
Django, daphne or Twisted and opens no database or Redis connection. The
supervisor starts N `manage.py serve --fd` children on the inherited listening
socket (the kernel hands each connection to whichever child accepts first),
forwards SIGTERM/SIGINT to them and waits for their drain (bounded, then
SIGKILL), and restarts a child that dies on its own after a short delay. Too many
deaths in a row stop everything with a non-zero exit, so ECS replaces the task.
"""

import argparse
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from chatsvc.core.logs import WORKER_INDEX_ENV, JsonFormatter

logger = logging.getLogger("chatsvc.workers")

SUPERVISOR_PID_ENV = "CHAT_SUPERVISOR_PID"
LISTEN_BACKLOG = 2048
RESTART_DELAY_SECONDS = 1.0
MAX_DEATHS = 5  # more deaths than this within DEATH_WINDOW_SECONDS: give up
DEATH_WINDOW_SECONDS = 60.0
POLL_SECONDS = 0.2
PR_SET_PDEATHSIG = 1  # linux/prctl.h
CONSOLE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"  # as settings.LOGGING


def available_cpus() -> int:
    return len(os.sched_getaffinity(0))


def listen(host: str, port: int) -> socket.socket:
    """A listening IPv4 socket the children inherit; OSError when the port is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # As Twisted does: a port in TIME_WAIT is free; one with a listener is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def exec_supervisor(
    *,
    workers: int,
    fd: int,
    host: str,
    port: int,
    stop_seconds: float,
    log_format: str,
    log_level: str,
    base_dir: Path,
) -> NoReturn:
    """Replace this (Django) process with the supervisor, keeping its pid and socket."""
    os.set_inheritable(fd, True)
    os.chdir(base_dir)  # `-m chatsvc...` below, and the children's manage.py
    child = [sys.executable, str(base_dir / "manage.py"), "serve"]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(  # noqa: S606 - this interpreter, fixed arguments
        sys.executable,
        [
            sys.executable,
            "-m",
            "chatsvc.core.workers",
            f"--workers={workers}",
            f"--fd={fd}",
            f"--host={host}",
            f"--port={port}",
            f"--stop-seconds={stop_seconds}",
            f"--log-format={log_format}",
            f"--log-level={log_level}",
            "--",
            *child,  # PID 1's command line still names `manage.py serve` (entrypoint.sh)
        ],
    )


def follow_supervisor() -> None:
    """In a child: drain (SIGTERM) when the supervisor dies, even of SIGKILL.

    Otherwise a killed supervisor would leave its children serving the port.
    """
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if not supervisor or not sys.platform.startswith("linux"):
        return
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != int(supervisor):  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def describe_exit(code: int) -> str:
    if code >= 0:
        return f"exited with {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"


@dataclass
class Worker:
    index: int
    process: subprocess.Popen | None = None
    restart_at: float = 0.0


class Supervisor:
    def __init__(
        self, *, command: list[str], workers: int, listener: socket.socket, stop_seconds: float
    ):
        self.command = command
        self.listener = listener
        self.stop_seconds = stop_seconds
        self.workers = [Worker(index) for index in range(workers)]
        self.deaths: deque[float] = deque()
        self.stop_signal: int | None = None
        self.gave_up = False

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        logger.info("starting %d web workers", len(self.workers))
        for worker in self.workers:
            self._start(worker)
        while self.stop_signal is None and not self.gave_up:
            self._check(time.monotonic())
            time.sleep(POLL_SECONDS)
        return self._stop()

    def _on_signal(self, signum, frame) -> None:
        self.stop_signal = signum

    def _start(self, worker: Worker) -> None:
        env = {
            **os.environ,
            WORKER_INDEX_ENV: str(worker.index),
            SUPERVISOR_PID_ENV: str(os.getpid()),
        }
        fd = self.listener.fileno()
        worker.process = subprocess.Popen(self.command, env=env, pass_fds=(fd,))  # noqa: S603
        logger.info("web worker %d started (pid %d)", worker.index, worker.process.pid)

    def _check(self, now: float) -> None:
        for worker in self.workers:
            if worker.process is None:
                if now >= worker.restart_at:
                    self._start(worker)
            elif worker.process.poll() is not None:
                self._died(worker, now)

    def _died(self, worker: Worker, now: float) -> None:
        process, worker.process = worker.process, None
        logger.error(
            "web worker %d (pid %d) %s",
            worker.index,
            process.pid,
            describe_exit(process.returncode),
            extra={"exit_code": process.returncode},
        )
        self.deaths.append(now)
        while self.deaths[0] < now - DEATH_WINDOW_SECONDS:
            self.deaths.popleft()
        if len(self.deaths) > MAX_DEATHS:
            logger.error(
                "web workers died %d times in %ds; stopping all of them",
                len(self.deaths),
                DEATH_WINDOW_SECONDS,
            )
            self.gave_up = True
        else:
            worker.restart_at = now + RESTART_DELAY_SECONDS

    def _stop(self) -> int:
        # The port stops accepting once every child has stopped listening too.
        self.listener.close()
        signum = self.stop_signal or signal.SIGTERM
        running = [w.process for w in self.workers if w.process is not None]
        reason = "giving up" if self.gave_up else signal.Signals(signum).name
        logger.info("stopping %d web workers (%s)", len(running), reason)
        for process in running:
            if process.poll() is None:
                process.send_signal(signum)
        deadline = time.monotonic() + self.stop_seconds
        for process in running:
            self._reap(process, deadline)
        # A child still starting has no handler yet and dies of the signal itself:
        # it had nothing to drain.
        clean = all(process.returncode in (0, -signum) for process in running)
        return 0 if clean and not self.gave_up else 1

    def _reap(self, process: subprocess.Popen, deadline: float) -> None:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.error("web worker pid %d did not stop in time; killing it", process.pid)
            process.kill()
            process.wait()


def configure_logging(log_format: str, level: str) -> None:
    handler = logging.StreamHandler()
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(CONSOLE_FORMAT)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level, handlers=[handler])


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chatsvc.core.workers")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--fd", type=int, required=True, help="the listening socket")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stop-seconds", type=float, required=True)
    parser.add_argument("--log-format", default="json")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("command", nargs="+", help="the child command, before --fd etc.")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    options = parse(argv)
    configure_logging(options.log_format, options.log_level)
    listener = socket.socket(fileno=options.fd)
    command = [
        *options.command,
        f"--fd={options.fd}",
        "--workers=1",
        f"--host={options.host}",
        f"--port={options.port}",
    ]
    supervisor = Supervisor(
        command=command,
        workers=options.workers,
        listener=listener,
        stop_seconds=options.stop_seconds,
    )
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
