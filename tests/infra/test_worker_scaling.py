"""worker.yaml in moto's CloudFormation: a release (a stack update that changes the
worker's image, as every swap does) keeps the task count autoscaling chose."""

import os

import boto3
import pytest
from moto import mock_aws

from tests.infra.cfn import TEMPLATES

pytestmark = [
    pytest.mark.infra,
    # moto's CloudFormation skips the scalable target, scaling policies and alarms.
    pytest.mark.filterwarnings("ignore:Tried to parse AWS::"),
]

REGION = "us-east-1"
ARN = "arn:aws:iam::123456789012:role/x"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:x"


def parameters(image_tag: str, security_group: str = "sg-11111111") -> list[dict]:
    values = {
        "ServiceName": "chatsvc-production-worker",
        "Environment": "production",
        "RepositoryUri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/chatsvc-production",
        "ImageTag": image_tag,
        "ClusterName": "chatsvc-production",
        "PrivateSubnetIds": "subnet-11111111,subnet-22222222",
        "SecurityGroupId": security_group,
        "ExecutionRoleArn": ARN,
        "TaskRoleArn": ARN,
        "LogGroupName": "/chatsvc-production/app",
        "QueueName": "chatsvc-production",
        "QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/chatsvc-production",
        "TableName": "chatsvc-production",
        "RedisHost": "redis.internal",
        "RedisAuthSecretArn": SECRET,
        "DatabaseHost": "db.internal",
        "DatabaseName": "chatsvc",
        "DatabaseSecretArn": SECRET,
        "AppSecretArn": SECRET,
        "AllowedHosts": "chat.example.com",
    }
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()]


@pytest.fixture
def aws(monkeypatch):
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, os.environ.get(name, value))
    with mock_aws():
        yield lambda service: boto3.client(service, region_name=REGION)


def worker(ecs) -> dict:
    (service,) = ecs.describe_services(
        cluster="chatsvc-production", services=["chatsvc-production-worker"]
    )["services"]
    return service


def test_a_release_keeps_the_worker_count_autoscaling_chose(aws):
    cfn, ecs = aws("cloudformation"), aws("ecs")
    ecs.create_cluster(clusterName="chatsvc-production")
    body = (TEMPLATES / "worker.yaml").read_text()
    cfn.create_stack(StackName="worker", TemplateBody=body, Parameters=parameters("aaaa1111"))
    assert cfn.describe_stacks(StackName="worker")["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"

    # A backlog: the scaling policy raised the service to 7 tasks (production: 2-10).
    ecs.update_service(
        cluster="chatsvc-production", service="chatsvc-production-worker", desiredCount=7
    )
    before = worker(ecs)["taskDefinition"]

    # The swap moves the worker to the new release's image: CloudFormation registers
    # a task definition revision and updates the service to it. moto does not carry
    # the new revision's ARN over to the service (it updates a resource only when a
    # parameter it references changes), so the release also changes a parameter the
    # service references itself: the service resource is updated either way.
    cfn.update_stack(
        StackName="worker", TemplateBody=body, Parameters=parameters("bbbb2222", "sg-22222222")
    )
    stack = cfn.describe_stacks(StackName="worker")["Stacks"][0]
    assert stack["StackStatus"] == "UPDATE_COMPLETE", stack.get("StackStatusReason")
    after = worker(ecs)
    # The update reached the service: it runs the new image's revision.
    assert before.endswith(":task-definition/chatsvc-production-worker:1")
    assert after["taskDefinition"].endswith(":task-definition/chatsvc-production-worker:2")
    assert after["desiredCount"] == 7  # not reset to MinCount (2)
