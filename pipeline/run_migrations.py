"""Run the database migrations once, as a one-off Fargate task, before the swap.

    python -m pipeline.run_migrations --cluster C --service chatsvc-green \\
        --subnets subnet-1,subnet-2 --security-groups sg-1
    python -m pipeline.run_migrations --cluster C --service-prefix chatsvc \\
        --deployment-json "$CODEBUILD_SRC_DIR_DiscoverOutput/deployment.json" ...

Runs the test service's *current* task definition (the release just deployed to
it) with the container command overridden to ``["migrate"]`` (container ``web``),
waits for the task to stop and fails unless that container exited 0. Migrations
must stay backward compatible with the live release (expand, then contract in a
later release): the old code keeps serving production until the swap.

Exit codes: 0 migrated, 1 the task failed (non-zero exit, never started),
2 bad usage, 3 timed out (the task is left running: see its logs), 4 AWS error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from pipeline import EXIT_AWS_ERROR, EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE


class MigrationError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


def service_name(service: str | None, prefix: str | None, deployment_json: str | None) -> str:
    if service:
        return service
    if not (prefix and deployment_json):
        raise MigrationError(
            "give --service, or --service-prefix with --deployment-json", EXIT_USAGE
        )
    try:
        color = json.loads(Path(deployment_json).read_text())["TestColor"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MigrationError(
            f"cannot read TestColor from {deployment_json}: {exc}", EXIT_USAGE
        ) from exc
    if color not in ("blue", "green"):
        raise MigrationError(f"{deployment_json}: TestColor is {color!r}", EXIT_USAGE)
    return f"{prefix}-{color}"


def run_migrations(
    ecs,
    *,
    cluster: str,
    service: str,
    subnets: list[str],
    security_groups: list[str],
    container: str = "web",
    command: list[str] | None = None,
    assign_public_ip: str = "DISABLED",
    timeout: float = 1200,
    poll: float = 10,
    log: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """Run the task and wait; return its ARN, or raise MigrationError."""
    command = command or ["migrate"]
    services = ecs.describe_services(cluster=cluster, services=[service])
    found = [s for s in services.get("services", []) if s.get("status") != "INACTIVE"]
    if not found:
        reasons = "; ".join(f.get("reason", "") for f in services.get("failures", []))
        raise MigrationError(f"service {service} not found in cluster {cluster} ({reasons})")
    task_definition = found[0]["taskDefinition"]
    log(f"running {command} in container {container} of {task_definition}")

    response = ecs.run_task(
        cluster=cluster,
        taskDefinition=task_definition,
        launchType="FARGATE",
        count=1,
        startedBy="chatsvc-migrate",
        networkConfiguration={
            "awsvpcConfiguration": {
                "subnets": subnets,
                "securityGroups": security_groups,
                "assignPublicIp": assign_public_ip,
            }
        },
        overrides={"containerOverrides": [{"name": container, "command": command}]},
    )
    if response.get("failures") or not response.get("tasks"):
        reasons = "; ".join(
            f"{f.get('arn', '')} {f.get('reason', '')} {f.get('detail', '')}".strip()
            for f in response.get("failures", [])
        )
        raise MigrationError(f"the migration task did not start: {reasons or 'no task returned'}")
    task_arn = response["tasks"][0]["taskArn"]
    log(f"started {task_arn}")

    deadline = clock() + timeout
    last = None
    while True:
        task = ecs.describe_tasks(cluster=cluster, tasks=[task_arn])["tasks"][0]
        status = task.get("lastStatus", "?")
        if status != last:
            log(f"task {status}")
            last = status
        if status == "STOPPED":
            break
        remaining = deadline - clock()
        if remaining <= 0:
            raise MigrationError(
                f"timed out after {timeout:.0f}s; the migration task {task_arn} is still "
                f"{status} and was left running (stopping a migration midway is worse): watch "
                f"its logs, then retry the stage once it has stopped",
                EXIT_TIMEOUT,
            )
        sleep(min(poll, remaining))

    containers = {c.get("name"): c for c in task.get("containers", [])}
    ours = containers.get(container)
    reason = task.get("stoppedReason") or "no reason given"
    if ours is None:
        raise MigrationError(f"the task has no container {container!r}; stopped: {reason}")
    exit_code = ours.get("exitCode")
    if exit_code is None:
        raise MigrationError(
            f"the migration container never ran to completion: {ours.get('reason') or reason}"
        )
    if exit_code != 0:
        raise MigrationError(
            f"migrate exited {exit_code} ({ours.get('reason') or reason}); see the task's logs"
        )
    log(f"migrations applied (task {task_arn} exited 0)")
    return task_arn


def _csv(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def main(argv: list[str] | None = None, *, ecs=None, sleep=time.sleep) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.run_migrations",
        description=(
            "Run `migrate` once as a one-off Fargate task from the test service's current "
            "task definition; fail unless it exits 0."
        ),
        epilog="Exit codes: 0 migrated, 1 failed, 2 bad usage, 3 timed out, 4 AWS error.",
    )
    parser.add_argument("--cluster", required=True)
    parser.add_argument("--service", help="the test service's name")
    parser.add_argument("--service-prefix", help="with --deployment-json: PREFIX-<TestColor>")
    parser.add_argument("--deployment-json", help="deployment_tags' output (reads TestColor)")
    parser.add_argument("--subnets", type=_csv, required=True, help="comma-separated")
    parser.add_argument("--security-groups", type=_csv, required=True, help="comma-separated")
    parser.add_argument("--container", default="web")
    parser.add_argument("--command", default="migrate", help="space-separated command (migrate)")
    parser.add_argument("--assign-public-ip", choices=("ENABLED", "DISABLED"), default="DISABLED")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds (1200)")
    parser.add_argument("--poll", type=float, default=10, help="seconds between polls (10)")
    parser.add_argument("--region", help="AWS region (default: from the environment)")
    args = parser.parse_args(argv)
    try:
        name = service_name(args.service, args.service_prefix, args.deployment_json)
        run_migrations(
            ecs or boto3.client("ecs", region_name=args.region),
            cluster=args.cluster,
            service=name,
            subnets=args.subnets,
            security_groups=args.security_groups,
            container=args.container,
            command=args.command.split(),
            assign_public_ip=args.assign_public_ip,
            timeout=args.timeout,
            poll=args.poll,
            sleep=sleep,
        )
    except MigrationError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return exc.code
    except (ClientError, BotoCoreError) as exc:
        print(f"FAILED: AWS error: {exc}", file=sys.stderr)
        return EXIT_AWS_ERROR
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
