"""docker/: the image's shape, the entrypoint's roles and URL composition, and the
compose file (validated by `docker compose config` when the compose plugin exists,
structurally otherwise)."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.infra.cfn import DOCKER, ROOT, docker_compose_available

pytestmark = pytest.mark.infra

ENTRYPOINT = DOCKER / "entrypoint.sh"


ECR_PUBLIC_PYTHON = "public.ecr.aws/docker/library/python:3.11-slim-bookworm"


def stages() -> list[tuple[str, str]]:
    """(stage name, stage text) of the Dockerfile."""
    text = (DOCKER / "Dockerfile").read_text()
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\w+)\s*$", text, flags=re.MULTILINE)
    return list(zip(parts[1::2], parts[2::2], strict=True))


def test_dockerfile_is_multi_stage_on_a_slim_python_311_from_ecr_public():
    """Both stages FROM ${PYTHON_IMAGE}, declared before the first FROM (so both see
    it), defaulting to ECR Public's mirror of the official image: no anonymous Docker
    Hub pull in CodeBuild. The pipeline may override it with a digest pin."""
    text = (DOCKER / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert bases == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"], bases
    args = re.findall(r"^ARG\s+PYTHON_IMAGE=(\S+)$", text, flags=re.MULTILINE)
    assert args == [ECR_PUBLIC_PYTHON]
    assert text.index("ARG PYTHON_IMAGE=") < text.index("\nFROM ")
    assert not re.search(r"^FROM\s+(docker\.io/)?(library/)?python:", text, flags=re.MULTILINE)
    assert [name for name, _ in stages()] == ["build", "runtime"]


def test_runtime_stage_has_no_compilers_runs_non_root_and_has_a_healthcheck():
    build, runtime = (body for _, body in stages())
    assert "pip install --no-cache-dir --require-hashes -r requirements/base.lock" in build
    assert "collectstatic --noinput" in build
    assert not re.search(r"apt-get install|gcc|build-essential|pip install", runtime)
    # OS security fixes: upgraded in the runtime stage, the package lists removed after.
    upgrade = re.search(r"^RUN apt-get update \\\n(.*?)(?=^\S)", runtime, re.M | re.S)
    assert upgrade, "the runtime stage upgrades its OS packages"
    assert "apt-get upgrade -y" in upgrade.group(1)
    assert "rm -rf /var/lib/apt/lists/*" in upgrade.group(1)
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    users = re.findall(r"^USER\s+(\S+)", runtime, flags=re.MULTILINE)
    assert users and not users[-1].startswith(("root", "0:", "0")), users
    assert re.search(r"^HEALTHCHECK .*", runtime, flags=re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["/usr/local/bin/entrypoint.sh"\]', runtime, re.MULTILINE)
    assert 'CMD ["web"]' in runtime and "EXPOSE 8000" in runtime


def test_dockerignore_keeps_the_context_small():
    text = (ROOT / ".dockerignore").read_text().splitlines()
    lines = [line.strip() for line in text if line.strip() and not line.startswith("#")]
    assert lines[0] == "**"  # ignore everything, then allow what the image needs
    assert {"!manage.py", "!requirements/", "!chatsvc/", "!docker/entrypoint.sh"} <= set(lines)


def run_entrypoint(*args, **env):
    venv_bin = os.path.dirname(sys.executable)
    return subprocess.run(
        ["sh", str(ENTRYPOINT), *args],
        cwd=ROOT,
        env={"PATH": f"{venv_bin}:/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def test_entrypoint_is_valid_posix_shell():
    result = subprocess.run(["sh", "-n", str(ENTRYPOINT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = ENTRYPOINT.read_text()
    for role, command in {
        "web": "exec python manage.py serve --host 0.0.0.0 --port 8000",
        "worker": "exec python manage.py consume_queue",
        "migrate": "exec python manage.py migrate --noinput",
    }.items():
        assert re.search(rf"^\s+{role}\)\n\s+compose_urls\n\s+{re.escape(command)}$", text, re.M)


def test_healthcheck_asks_for_readiness_once_then_liveness():
    """ECS's container health check (web-service.yaml) runs `entrypoint.sh healthcheck`:
    a new web task must be ready (database, Redis, SQS) before it counts as healthy, so
    a release that cannot reach them is rolled back; once ready it stays healthy while
    alive, so a dependency outage does not make ECS replace every live task."""
    text = ENTRYPOINT.read_text()
    body = re.search(r"^healthcheck\(\) \{\n(.*?)^\}", text, re.M | re.S).group(1)
    urls = re.findall(r"http://127\.0\.0\.1:8000/\w+", body)
    assert urls == ["http://127.0.0.1:8000/healthz", "http://127.0.0.1:8000/readyz"]
    liveness, readiness = body.split("8000/readyz")
    assert 'if [ -e "$marker" ]' in liveness  # liveness only after the marker exists
    assert '&& touch "$marker"' in readiness  # which only a 200 from /readyz writes
    assert "exit $?" in readiness


def test_entrypoint_composes_urls_from_injected_secrets():
    result = run_entrypoint(
        "printenv",
        DATABASE_HOST="db.internal",
        DATABASE_NAME="chatsvc",
        DATABASE_USER="chat svc",
        DATABASE_PASSWORD="p@ss:w/rd#1",
        REDIS_HOST="redis.internal",
        REDIS_AUTH_TOKEN="tok3n",
    )
    assert result.returncode == 0, result.stderr
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert (
        env["DATABASE_URL"] == "postgres://chat%20svc:p%40ss%3Aw%2Frd%231@db.internal:5432/chatsvc"
    )
    assert env["REDIS_URL"] == "rediss://:tok3n@redis.internal:6379/0"


def test_entrypoint_keeps_urls_given_directly():
    result = run_entrypoint(
        "printenv",
        DATABASE_URL="postgres://u:p@h/d",
        DATABASE_HOST="ignored",
        REDIS_URL="redis://r:6379/0",
        REDIS_HOST="ignored",
    )
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert env["DATABASE_URL"] == "postgres://u:p@h/d"
    assert env["REDIS_URL"] == "redis://r:6379/0"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_config_is_accepted(compose):
    if docker_compose_available():
        result = subprocess.run(
            [shutil.which("docker"), "compose", "-f", str(DOCKER / "compose.yaml"), "config", "-q"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
    # Structurally, in any case (no docker CLI compose plugin on every machine).
    services = compose["services"]
    assert {"web", "worker", "redis", "postgres", "aws"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for port in service.get("ports", []):
            assert re.fullmatch(r"\d+:\d+", port), port
    for role in ("web", "worker", "migrate"):
        assert services[role]["command"] == [role]
        assert services[role]["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert services["web"]["ports"] == ["8000:8000"]
    assert services["web"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_points_the_app_at_the_local_services(compose):
    env = compose["services"]["web"]["environment"]
    assert (
        env["DATABASE_URL"].startswith("postgres://") and "@postgres:5432/" in env["DATABASE_URL"]
    )
    assert env["REDIS_URL"] == "redis://redis:6379/0"
    assert env["AWS_ENDPOINT_URL"] == "http://aws:5000"
    assert env["CHAT_QUEUE_URL"].endswith("/" + env["CHAT_TABLE_NAME"])
    assert compose["services"]["worker"]["environment"] == env
    provision = "\n".join(compose["services"]["provision"]["command"])
    assert "ensure_queue" in provision and "ensure_table" in provision


def test_the_lock_pins_every_runtime_requirement_with_hashes():
    """requirements/base.lock is base.txt resolved (`make lock`): they must not drift."""
    pin = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^\s\\]+)", re.MULTILINE)

    def pins(text):
        return {name.lower().replace("_", "-"): version for name, version in pin.findall(text)}

    wanted = pins((ROOT / "requirements" / "base.txt").read_text())
    lock = (ROOT / "requirements" / "base.lock").read_text()
    locked = pins(lock)
    assert wanted and all(locked.get(name) == version for name, version in wanted.items())
    entries = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", lock)[1:]
    assert len(entries) == len(locked) and all("--hash=sha256:" in entry for entry in entries)
    options = [line for line in lock.splitlines() if line.startswith("--")]
    assert options == []  # no index or find-links of the machine that made it
