"""run_migrations against moto's ECS (tasks progress to STOPPED as they are described)."""

from __future__ import annotations

import json

import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ecs.models import ecs_backends

from pipeline import run_migrations
from tests.pipeline import world

pytestmark = pytest.mark.infra


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", world.REGION)
    with mock_aws():
        c = world.clients()
        w = world.build(c, images={"blue": "old000000001", "green": "new000000001"}, services=True)
        yield c, w


def args(w, *extra):
    return [
        "--cluster", w.cluster,
        "--subnets", ",".join(w.subnets),
        "--security-groups", ",".join(w.security_groups),
        "--poll", "0",
        *extra,
    ]  # fmt: skip


def tasks(c, w):
    arns = c["ecs"].list_tasks(cluster=w.cluster, startedBy="chatsvc-migrate")["taskArns"]
    return c["ecs"].describe_tasks(cluster=w.cluster, tasks=arns)["tasks"] if arns else []


def set_exit_code(code):
    """The migrate container's exit code once it stops (what the task will report)."""
    backend = ecs_backends[DEFAULT_ACCOUNT_ID][world.REGION]
    original = backend.run_task

    def run_task(*a, **kw):
        started = original(*a, **kw)
        for task in started:
            task.containers[0].exitCode = code
        return started

    backend.run_task = run_task  # mock_aws's reset on exit drops it


def test_runs_the_test_services_task_definition_with_migrate(env, tmp_path, capsys):
    c, w = env
    deployment = tmp_path / "deployment.json"
    deployment.write_text(json.dumps({"TestColor": "green", "LiveColor": "blue"}))
    code = run_migrations.main(
        args(w, "--service-prefix", "chatsvc", "--deployment-json", str(deployment)),
        sleep=lambda s: None,
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "migrations applied" in out
    (task,) = tasks(c, w)
    assert task["taskDefinitionArn"] == w.task_definitions["green"]
    assert task["launchType"] == "FARGATE"
    assert task["overrides"]["containerOverrides"] == [{"name": "web", "command": ["migrate"]}]
    assert task["lastStatus"] == "STOPPED"


def test_fails_when_migrate_exits_non_zero(env, capsys, monkeypatch):
    c, w = env
    set_exit_code(3)
    code = run_migrations.main(args(w, "--service", "chatsvc-blue"), sleep=lambda s: None)
    err = capsys.readouterr().err
    assert code == 1
    assert "FAILED: migrate exited 3" in err
    (task,) = tasks(c, w)
    assert task["taskDefinitionArn"] == w.task_definitions["blue"]


def test_fails_when_the_container_never_ran(env, capsys, monkeypatch):
    _c, w = env
    set_exit_code(None)
    code = run_migrations.main(args(w, "--service", "chatsvc-green"), sleep=lambda s: None)
    assert code == 1
    assert "never ran to completion" in capsys.readouterr().err


def test_times_out_and_leaves_the_task_running(env, capsys):
    c, w = env
    from moto.moto_api import state_manager

    state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10**6})
    try:
        code = run_migrations.main(args(w, "--service", "chatsvc-green", "--timeout", "0"))
    finally:
        state_manager.unset_transition("ecs::task")
    assert code == 3
    assert "timed out" in capsys.readouterr().err
    (task,) = tasks(c, w)
    assert task["lastStatus"] != "STOPPED"


def test_unknown_service_fails(env, capsys):
    _, w = env
    code = run_migrations.main(args(w, "--service", "chatsvc-purple"), sleep=lambda s: None)
    assert code == 1
    assert "service chatsvc-purple not found" in capsys.readouterr().err


def test_bad_deployment_json_is_a_usage_error(env, tmp_path, capsys):
    _, w = env
    bad = tmp_path / "deployment.json"
    bad.write_text(json.dumps({"TestColor": "purple"}))
    code = run_migrations.main(
        args(w, "--service-prefix", "chatsvc", "--deployment-json", str(bad))
    )
    assert code == 2
    assert "TestColor is 'purple'" in capsys.readouterr().err
