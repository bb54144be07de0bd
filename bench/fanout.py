"""Fan-out benchmark: the real server (Redis layer) against real WebSocket clients.

    python bench/fanout.py [--scenario lecture|tutoring|idle|reconnect|all] [--quick]
                           [--fast-sqs] [--clients N] [--idle-connections N]
                           [--workers N] [--profile DIR]

Starts an AWS emulator (moto server, pinned to CPU 1: it stands in for remote
AWS), `manage.py serve` pinned to CPU 0 with REDIS_URL set, and the load
generator (bench/loadgen.py) pinned to CPU 1, and
prints one JSON line per scenario: deliveries/s, p50/p99 latency, lost
messages, the server's peak RSS and the CPU it used. With --fast-sqs the
server's queue calls go to bench/fast_sqs.py (accepts at once, stores
nothing) instead of the emulator, which limits the rates otherwise. Not a
test: run by `make bench`.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LECTURE_P99_TARGET_MS = 100
LECTURE_GIVE_UP_P99_MS = 2000  # keep stepping past the target to show the curve
LECTURE_RATES = [5, 25, 50, 75, 100, 125, 150, 200, 250, 300, 400, 500, 600, 800]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pinned(cpu: int | str, command: list[str]) -> list[str]:
    return (["taskset", "-c", str(cpu)] if shutil.which("taskset") else []) + command


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback only
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


def _processes(pid: int) -> list[int]:
    """The server: with workers, the supervisor and them."""
    return [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the server has used so far."""
    ticks = 0
    for process in _processes(pid):
        fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> dict:
    """VmRSS and VmHWM of the server: with workers, the sum over the supervisor and them."""
    fields = {"VmRSS": 0, "VmHWM": 0}
    for process in _processes(pid):
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in fields:
                fields[name] += int(value.split()[0])
    return fields


class Bench:
    def __init__(self, workdir: Path, profile_dir: Path | None = None, workers: int = 1):
        self.workdir = workdir
        self.server_env: dict[str, str] = {}  # what the server's environment changes
        self.workers = workers
        self.servers = 0
        self.profile_dir = profile_dir
        self.profiles = 0
        self.processes: list[subprocess.Popen] = []
        self.env = {
            **os.environ,
            "DEBUG": "false",
            "SECRET_KEY": "bench-only-" + "b" * 60,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECURE_SSL_REDIRECT": "false",
            "DATABASE_URL": f"sqlite:///{workdir / 'bench.sqlite3'}",
            "REDIS_URL": os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": "us-east-1",
            "LOG_LEVEL": "WARNING",
            # Every client of the load generator comes from 127.0.0.1.
            "CHAT_MAX_UNAUTHENTICATED_PER_ADDRESS": "100000",
            "DJANGO_SETTINGS_MODULE": "chatsvc.settings",
        }

    def spawn(self, command, env=None, **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(command, cwd=ROOT, env=env or self.env, **kwargs)
        self.processes.append(process)
        return process

    def start_emulator(self) -> None:
        port = free_port()
        # The emulator stands in for remote AWS: keep it off the server's core and
        # below the load generator (it takes a whole core at 500 messages/s).
        moto = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        self.spawn(
            ["nice", "-n", "19", *pinned(1, moto)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
        wait_http(self.env["AWS_ENDPOINT_URL"] + "/moto-api/")

    def start_fast_sqs(self) -> None:
        """The server's AWS calls go to bench/fast_sqs.py: in these scenarios they are all
        SendMessageBatch (anything else would get a clear error, not a silent success)."""
        port = free_port()
        command = [sys.executable, str(ROOT / "bench" / "fast_sqs.py"), str(port)]
        self.spawn(pinned(1, command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.server_env["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"

    def setup_django(self) -> None:
        os.environ.update(self.env)
        import django

        django.setup()
        from django.conf import settings
        from django.core.management import call_command

        from chatsvc.aws import clients, provision

        call_command("migrate", verbosity=0)
        provision.ensure_table(clients.dynamodb(), settings.CHAT_TABLE_NAME)

    def start_server(self) -> subprocess.Popen:
        from chatsvc.aws import clients, provision

        # A queue per server: the emulator slows down as unconsumed messages pile up,
        # and one scenario's backlog must not weigh on the next.
        self.servers += 1
        queue_url, _ = provision.ensure_queue(clients.sqs(), f"bench{self.servers}")
        self.env["CHAT_QUEUE_URL"] = queue_url
        self.port = free_port()
        command = [sys.executable, "manage.py", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--workers", str(self.workers)]
        # One process: CPU 0, as ever. More: every CPU (the load generator shares CPU 1).
        cpus = "0" if self.workers == 1 else ",".join(map(str, sorted(os.sched_getaffinity(0))))
        server = self.spawn(pinned(cpus, command), env={**self.env, **self.server_env})
        wait_http(f"http://127.0.0.1:{self.port}/healthz")
        if self.profile_dir:  # py-spy samples the server until it stops (raw, flamegraph-able)
            self.profiles += 1
            output = self.profile_dir / f"server-{self.profiles}.txt"
            py_spy = [str(Path(sys.executable).with_name("py-spy")), "record", "--nonblocking"]
            self.spawn(
                [*py_spy, "-p", str(server.pid), "-r", "250", "-f", "raw", "-o", output],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        return server

    def tenant(self):
        from chatsvc.realtime import tokens
        from chatsvc.rooms.services import open_room
        from chatsvc.tenants.services import create_tenant

        issued = create_tenant(slug=f"bench{time.time_ns()}")
        issued.tenant.messages_per_second = 1000
        # Thousands of sockets share a handful of users here (one token each).
        issued.tenant.max_sockets_per_user = 100_000
        issued.tenant.save()

        def token(user):
            return tokens.mint(
                key=issued.key,
                signing_secret=issued.signing_secret,
                user_id=user,
                name=user,
                connection_ids=["*"],
                ttl_seconds=3600,
            )[0]

        return issued.tenant, token, lambda: open_room(tenant=issued.tenant).connection_id

    def loadgen(self, config: dict, *, hold: bool = False) -> subprocess.Popen:
        path = self.workdir / f"{config['scenario']}.json"
        path.write_text(json.dumps({**config, "url": f"ws://127.0.0.1:{self.port}/ws/v1/"}))
        command = pinned(1, [sys.executable, "bench/loadgen.py", str(path)])
        stdin = subprocess.PIPE if hold else subprocess.DEVNULL
        return self.spawn(command, stdout=subprocess.PIPE, stdin=stdin, text=True)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()


def relay(process: subprocess.Popen, server: subprocess.Popen) -> None:
    """Print the load generator's results with the server's peak RSS and the CPU it
    used since the previous result (busy: that CPU over the wall time); then stop both."""
    cpu, wall = cpu_seconds(server.pid), time.monotonic()
    for line in process.stdout:
        result = json.loads(line)
        result["server_peak_rss_kib"] = rss_kib(server.pid)["VmHWM"]
        now_cpu, now_wall = cpu_seconds(server.pid), time.monotonic()
        result["server_cpu_s"] = round(now_cpu - cpu, 2)
        result["server_busy"] = round((now_cpu - cpu) / (now_wall - wall), 2)
        cpu, wall = now_cpu, now_wall
        print(json.dumps(result), flush=True)
    process.wait()
    server.send_signal(signal.SIGTERM)
    server.wait(30)


def run_lecture(bench: Bench, args) -> None:
    server = bench.start_server()
    _, token, new_room = bench.tenant()
    rates = LECTURE_RATES[:4] if args.quick else LECTURE_RATES
    config = {
        "scenario": "lecture",
        "rooms": [new_room()],
        "clients": args.clients,
        "token": token("listener"),
        "sender_token": token("lecturer"),
        "rates": rates,
        "seconds": 3 if args.quick else 5,
    }
    best = None
    process = bench.loadgen(config)
    cpu = cpu_seconds(server.pid)
    for line in process.stdout:
        step = json.loads(line)
        step["server_peak_rss_kib"] = rss_kib(server.pid)["VmHWM"]
        # Server CPU per delivery: the step's CPU (since the last step) over its deliveries.
        used = cpu_seconds(server.pid) - cpu
        cpu += used
        step["server_us_per_delivery"] = round(used * 1e6 / max(step["delivered"], 1), 1)
        print(json.dumps(step), flush=True)
        # `not_stored` is the emulator accepting fewer SendMessageBatch calls than the
        # web tier makes (the message was delivered; the sender resends it): fan-out
        # is measured on. Refusals (`overloaded`) are the server bounding latency.
        clean = step["lost"] == 0 and set(step["error_codes"]) <= {"not_stored", "overloaded"}
        if clean and step["refused"] == 0 and step["p99_ms"] < LECTURE_P99_TARGET_MS:
            best = step
        if not clean or (step["p99_ms"] or 0) > LECTURE_GIVE_UP_P99_MS:
            process.terminate()
            break
    process.wait()
    summary = {"scenario": "lecture", "clients": args.clients, "best": best}
    summary["server_peak_rss_kib"] = rss_kib(server.pid)["VmHWM"]
    print(json.dumps(summary), flush=True)
    server.send_signal(signal.SIGTERM)
    server.wait(30)


def run_tutoring(bench: Bench, args) -> None:
    server = bench.start_server()
    _, token, new_room = bench.tenant()
    config = {
        "scenario": "tutoring",
        "rooms": [new_room() for _ in range(250)],
        "pair_tokens": [token("student"), token("tutor")],
        "seconds": 5 if args.quick else 15,
    }
    relay(bench.loadgen(config), server)


def run_idle(bench: Bench, args) -> None:
    server = bench.start_server()
    _, token, new_room = bench.tenant()
    rooms = 100 if args.quick else args.idle_connections // 2
    config = {
        "scenario": "idle",
        "rooms": [new_room() for _ in range(rooms)],
        "per_room": 2,
        "token": token("idle"),
    }
    time.sleep(2)
    before = rss_kib(server.pid)["VmRSS"]
    process = bench.loadgen(config, hold=True)
    ready = json.loads(process.stdout.readline())
    time.sleep(3)  # let allocations settle
    after = rss_kib(server.pid)
    process.stdin.close()
    process.wait()
    connections = ready["connections"]
    print(
        json.dumps(
            {
                "scenario": "idle",
                "connections": connections,
                "rooms": rooms,
                "server_rss_before_kib": before,
                "server_rss_after_kib": after["VmRSS"],
                "kib_per_connection": round((after["VmRSS"] - before) / connections, 1),
                "server_peak_rss_kib": after["VmHWM"],
            }
        ),
        flush=True,
    )
    server.send_signal(signal.SIGTERM)
    server.wait(30)


def run_reconnect(bench: Bench, args) -> None:
    """After a drain every client of a process reconnects: auth + join, then resume."""
    server = bench.start_server()
    _, token, new_room = bench.tenant()
    rooms = 250 if args.quick else 1000
    config = {
        "scenario": "reconnect",
        "rooms": [new_room() for _ in range(rooms)],
        "tokens": [token(f"learner{n}") for n in range(2)],
        "live_rooms": [new_room() for _ in range(25 if args.quick else 50)],
        "pair_tokens": [token("student"), token("tutor")],
        "concurrency": 500,
    }
    relay(bench.loadgen(config), server)


SCENARIOS = {
    "lecture": run_lecture,
    "tutoring": run_tutoring,
    "idle": run_idle,
    "reconnect": run_reconnect,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=[*SCENARIOS, "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="shorter runs, fewer steps")
    parser.add_argument("--clients", type=int, default=200, help="lecture audience size")
    parser.add_argument(
        "--workers", type=int, default=1, help="web processes (serve --workers; >1: every CPU)"
    )
    parser.add_argument(
        "--profile", type=Path, help="write py-spy profiles of the server (raw) to this directory"
    )
    parser.add_argument(
        "--fast-sqs", action="store_true", help="SQS that accepts at once and stores nothing"
    )
    parser.add_argument(
        "--idle-connections", type=int, default=2000, help="idle sockets (2 per room)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="chatsvc-bench-") as workdir:
        bench = Bench(Path(workdir), args.profile, args.workers)
        try:
            bench.start_emulator()
            if args.fast_sqs:
                bench.start_fast_sqs()
            bench.setup_django()
            for name, run in SCENARIOS.items():
                if args.scenario in (name, "all"):
                    run(bench, args)
        finally:
            bench.stop()


if __name__ == "__main__":
    main()
