"""The role CloudFormation deploys the release stack with (pipeline.yaml,
ReleaseDeployRole) grants what the resource handlers of every type in release.yaml
and its children call, scoped to our resources wherever IAM allows it.

HANDLER_PERMISSIONS is the union of handlers.{create,read,update,delete,list}.permissions
in each type's CloudFormation registry schema (`aws cloudformation describe-type --type
RESOURCE --type-name TYPE`, the "Schema" field; the same files as the
aws-cloudformation-resource-providers-* repositories and cfn-lint's provider schemas).
Left out, because no release resource uses the feature they serve: cognito-idp (listener
authenticate actions), lambda:* (scalable targets of Lambda functions), iam:PassRole of
a scalable target's RoleARN (we let the service-linked role be used), and the
AWS::CloudFormation::Stack schema's iam:*ServiceLinkedRole entries (nested stacks create
no service-linked role themselves; ServiceLinkedRoles grants the three our resources need).
"""

import json
from pathlib import Path

import pytest

from tests.infra.cfn import ROOT, load, nested_stacks

pytestmark = pytest.mark.infra

HANDLER_PERMISSIONS = {
    "AWS::CloudFormation::Stack": {
        "cloudformation:CreateStack",
        "cloudformation:UpdateStack",
        "cloudformation:DeleteStack",
        "cloudformation:DescribeStacks",
        "cloudformation:ListStacks",
    },
    "AWS::ElasticLoadBalancingV2::LoadBalancer": {
        "elasticloadbalancing:CreateLoadBalancer",
        "elasticloadbalancing:DeleteLoadBalancer",
        "elasticloadbalancing:DescribeLoadBalancers",
        "elasticloadbalancing:DescribeLoadBalancerAttributes",
        "elasticloadbalancing:ModifyLoadBalancerAttributes",
        "elasticloadbalancing:DescribeCapacityReservation",
        "elasticloadbalancing:ModifyCapacityReservation",
        "elasticloadbalancing:SetSecurityGroups",
        "elasticloadbalancing:SetSubnets",
        "elasticloadbalancing:SetIpAddressType",
        "elasticloadbalancing:AddTags",
        "elasticloadbalancing:RemoveTags",
        "elasticloadbalancing:DescribeTags",
        "ec2:DescribeInternetGateways",
        "ec2:DescribeVpcs",
        "ec2:DescribeSubnets",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeAccountAttributes",
    },
    "AWS::ElasticLoadBalancingV2::Listener": {
        "elasticloadbalancing:CreateListener",
        "elasticloadbalancing:DeleteListener",
        "elasticloadbalancing:ModifyListener",
        "elasticloadbalancing:DescribeListeners",
        "elasticloadbalancing:DescribeListenerAttributes",
        "elasticloadbalancing:ModifyListenerAttributes",
        "elasticloadbalancing:DescribeListenerCertificates",
        "elasticloadbalancing:DescribeSSLPolicies",
        "elasticloadbalancing:DescribeRules",
    },
    "AWS::ElasticLoadBalancingV2::TargetGroup": {
        "elasticloadbalancing:CreateTargetGroup",
        "elasticloadbalancing:DeleteTargetGroup",
        "elasticloadbalancing:ModifyTargetGroup",
        "elasticloadbalancing:ModifyTargetGroupAttributes",
        "elasticloadbalancing:DescribeTargetGroups",
        "elasticloadbalancing:DescribeTargetGroupAttributes",
        "elasticloadbalancing:DescribeTargetHealth",
        "elasticloadbalancing:DescribeLoadBalancers",
        "elasticloadbalancing:RegisterTargets",
        "elasticloadbalancing:DeregisterTargets",
        "elasticloadbalancing:AddTags",
        "elasticloadbalancing:RemoveTags",
        "elasticloadbalancing:DescribeTags",
    },
    "AWS::ECS::Service": {
        "ecs:CreateService",
        "ecs:UpdateService",
        "ecs:DeleteService",
        "ecs:DescribeServices",
        "ecs:ListServices",
        "ecs:ListClusters",
        "ecs:TagResource",
        "ecs:UntagResource",
        "ecs:ListTagsForResource",
        "iam:PassRole",
    },
    "AWS::ECS::TaskDefinition": {
        "ecs:RegisterTaskDefinition",
        "ecs:DeregisterTaskDefinition",
        "ecs:DescribeTaskDefinition",
        "ecs:ListTaskDefinitions",
        "ecs:TagResource",
        "ecs:UntagResource",
        "ecs:ListTagsForResource",
        "iam:GetRole",
        "iam:PassRole",
    },
    "AWS::ApplicationAutoScaling::ScalableTarget": {
        "application-autoscaling:RegisterScalableTarget",
        "application-autoscaling:DeregisterScalableTarget",
        "application-autoscaling:DescribeScalableTargets",
        "application-autoscaling:DescribeScheduledActions",
        "application-autoscaling:PutScheduledAction",
        "application-autoscaling:DeleteScheduledAction",
        "application-autoscaling:TagResource",
        "application-autoscaling:UntagResource",
        "application-autoscaling:ListTagsForResource",
        "cloudwatch:PutMetricAlarm",
        "cloudwatch:DescribeAlarms",
        "cloudwatch:DeleteAlarms",
        "iam:CreateServiceLinkedRole",
    },
    "AWS::ApplicationAutoScaling::ScalingPolicy": {
        "application-autoscaling:PutScalingPolicy",
        "application-autoscaling:DeleteScalingPolicy",
        "application-autoscaling:DescribeScalingPolicies",
        "cloudwatch:PutMetricAlarm",
        "cloudwatch:DescribeAlarms",
        "cloudwatch:DeleteAlarms",
    },
    "AWS::CloudWatch::Alarm": {
        "cloudwatch:PutMetricAlarm",
        "cloudwatch:DeleteAlarms",
        "cloudwatch:DescribeAlarms",
        "cloudwatch:TagResource",
        "cloudwatch:UntagResource",
        "cloudwatch:ListTagsForResource",
    },
}

# cfn-lint's copy of the IAM Service Authorization Reference: which resource types
# each action can be scoped to (none: the action needs Resource "*").
IAM_ACTIONS = next(
    (ROOT / ".venv-infra" / "lib").glob(
        "python3*/site-packages/cfnlint/data/AdditionalSpecs/Policies.json"
    ),
    None,
)


def release_resource_types() -> set[str]:
    found, pending = set(), ["release.yaml"]
    while pending:
        template = load(pending.pop())
        found |= {r["Type"] for r in template["Resources"].values()}
        pending += [child for child, _ in nested_stacks(template).values()]
    return found


def statements() -> list[dict]:
    role = load("pipeline.yaml")["Resources"]["ReleaseDeployRole"]["Properties"]
    return [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def granted() -> dict[str, list[dict]]:
    """action -> the Allow statements granting it."""
    found: dict[str, list[dict]] = {}
    for statement in statements():
        assert statement["Effect"] == "Allow"
        for action in as_list(statement["Action"]):
            found.setdefault(action, []).append(statement)
    return found


def test_the_table_covers_every_resource_type_the_release_stack_creates():
    assert release_resource_types() == set(HANDLER_PERMISSIONS)


@pytest.mark.parametrize("resource_type", sorted(HANDLER_PERMISSIONS))
def test_every_handler_permission_is_granted(resource_type):
    missing = HANDLER_PERMISSIONS[resource_type] - set(granted())
    assert not missing, f"{resource_type}: the release deploy role lacks {sorted(missing)}"


def resource_types_of(action: str) -> list[str]:
    if IAM_ACTIONS is None:
        pytest.fail("cfn-lint's Policies.json is missing: run `make infra-tools`", pytrace=False)
    service, name = action.split(":")
    actions = json.loads(Path(IAM_ACTIONS).read_text())[service]["Actions"]
    assert name.lower() in actions, f"{action} is not an IAM action"
    return actions[name.lower()].get("Resources", [])


def test_star_only_for_actions_without_resource_level_permissions():
    for action, grants in granted().items():
        for statement in grants:
            if "*" in as_list(statement["Resource"]):
                assert not resource_types_of(action), (
                    f"{action} can be scoped to {resource_types_of(action)}; it is granted on *"
                )


def test_scoped_grants_name_only_this_environments_resources():
    for statement in statements():
        for resource in as_list(statement["Resource"]):
            if resource == "*":
                continue
            if isinstance(resource, dict) and "Fn::Sub" in resource:
                text = resource["Fn::Sub"]
                assert (
                    "${Prefix}" in text
                    or text.endswith(":role/aws-service-role/*")
                    # every published revision: the colors may run different ones
                    or text == "arn:${AWS::Partition}:s3:::${ArtifactBucket}/${TemplatePrefix}*"
                    # scalable-target ARNs end in a random id, not the service's name
                    or text.endswith(":scalable-target/*")
                ), resource
            else:  # the task roles, passed in by ARN
                assert resource in (
                    {"Ref": "ExecutionRoleArn"},
                    {"Ref": "WebTaskRoleArn"},
                    {"Ref": "WorkerTaskRoleArn"},
                ), resource
