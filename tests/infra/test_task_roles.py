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


TENANT_OBJECTS = {"Fn::Sub": "${AttachmentsBucketArn}/tenants/*"}


def s3_statements(role: str) -> list[dict]:
    return [
        s
        for s in statements(role)
        if any(
            a.startswith("s3:")
            for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
        )
    ]


def test_web_tasks_put_get_and_delete_tenants_attachments_only():
    """Presigned POSTs and GETs carry the web task's credentials; rejected uploads
    are deleted by it. Listing the bucket makes a missing upload a 404, not a 403."""
    objects, listing = s3_statements("WebTaskRole")
    assert objects["Resource"] == TENANT_OBJECTS
    assert sorted(objects["Action"]) == ["s3:DeleteObject", "s3:GetObject", "s3:PutObject"]
    assert listing["Action"] == "s3:ListBucket"
    assert listing["Resource"] == {"Ref": "AttachmentsBucketArn"}
    assert "Condition" not in listing  # S3's 404-or-403 check carries no s3:prefix
    # SSE-KMS: uploads need GenerateDataKey, downloads Decrypt, on the stack's key.
    for action in ("kms:GenerateDataKey", "kms:Decrypt"):
        assert grants("WebTaskRole", action) == [{"Ref": "KmsKeyArn"}]


def test_worker_tasks_may_only_delete_tenants_attachments():
    (statement,) = s3_statements("WorkerTaskRole")
    assert statement["Action"] == "s3:DeleteObject"
    assert statement["Resource"] == TENANT_OBJECTS


@pytest.mark.parametrize("template", ["web-service.yaml", "worker.yaml"])
def test_tasks_know_the_attachments_bucket(template):
    """Named as data.yaml names it, from the prefix the table name carries
    (the release stack passes no bucket name; a given AttachmentsBucket wins)."""
    loaded = load(template)
    (container,) = loaded["Resources"]["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    environment = {item["Name"]: item["Value"] for item in container["Environment"]}
    condition, derived, given = environment["CHAT_ATTACHMENTS_BUCKET"]["Fn::If"]
    assert loaded["Conditions"][condition] == {"Fn::Equals": [{"Ref": "AttachmentsBucket"}, ""]}
    assert given == {"Ref": "AttachmentsBucket"}
    assert loaded["Parameters"]["AttachmentsBucket"]["Default"] == ""
    text, variables = derived["Fn::Sub"]
    data = load("data.yaml")
    bucket_name = data["Resources"]["AttachmentsBucket"]["Properties"]["BucketName"]["Fn::Sub"]
    table_name = data["Resources"]["MessagesTable"]["Properties"]["TableName"]["Fn::Sub"]
    assert text == bucket_name
    delimiter, source = variables["Prefix"]["Fn::Select"][1]["Fn::Split"]
    assert variables["Prefix"]["Fn::Select"][0] == 0 and source == {"Ref": "TableName"}
    for prefix in ("chatsvc-dev", "chatsvc-production", "lms2-staging"):
        table = table_name.replace("${Prefix}", prefix)
        assert table.split(delimiter)[0] == prefix


def test_root_wires_the_bucket_to_the_roles():
    from tests.infra.cfn import nested_stacks

    children = nested_stacks(load("root.yaml"))
    assert children["TaskRoles"][1]["AttachmentsBucketArn"] == {
        "Fn::GetAtt": ["Data", "Outputs.AttachmentsBucketArn"]
    }
    for name in ("AttachmentCorsOrigins", "AttachmentExpirationDays"):
        assert children["Data"][1][name] == {"Ref": name}
