"""What the tasks' roles may do with secrets, and the variables that go with it."""

import pytest

from tests.infra.cfn import load


def statements(role: str) -> list[dict]:
    properties = load("task-roles.yaml")["Resources"][role]["Properties"]
    return [s for policy in properties["Policies"] for s in policy["PolicyDocument"]["Statement"]]


def grants(role: str, action: str) -> list:
    return [
        s["Resource"]
        for s in statements(role)
        if action in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    ]


def test_web_and_worker_tasks_may_read_the_database_secret_and_only_it():
    """After an RDS rotation they read the new password (chatsvc.core.rotating_postgres)."""
    for role in ("WebTaskRole", "WorkerTaskRole"):
        assert grants(role, "secretsmanager:GetSecretValue") == [{"Ref": "DatabaseSecretArn"}]


def test_only_web_tasks_may_store_the_smoke_key_and_nothing_else():
    assert grants("WebTaskRole", "secretsmanager:PutSecretValue") == [
        {"Ref": "SmokeApiKeySecretArn"}
    ]
    assert grants("WorkerTaskRole", "secretsmanager:PutSecretValue") == []


@pytest.mark.parametrize("template", ["web-service.yaml", "worker.yaml"])
def test_tasks_know_the_secret_their_database_credentials_came_from(template):
    (container,) = load(template)["Resources"]["TaskDefinition"]["Properties"][
        "ContainerDefinitions"
    ]
    environment = {item["Name"]: item["Value"] for item in container["Environment"]}
    assert environment["DATABASE_SECRET_ARN"] == {"Ref": "DatabaseSecretArn"}
    injected = {item["Name"]: item["ValueFrom"] for item in container["Secrets"]}
    assert injected["DATABASE_PASSWORD"] == {"Fn::Sub": "${DatabaseSecretArn}:password::"}
