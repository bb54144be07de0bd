"""The network, security-group, load-balancer and data templates, created for real in
moto's CloudFormation. Each child stack is created on its own (moto cannot resolve
nested-stack outputs); the parameters a sibling would pass come from the sibling's
outputs or the resources it made.
"""

import json
import os

import boto3
import pytest
from moto import mock_aws
from moto.elbv2.models import FakeLoadBalancer, FakeTargetGroup, elbv2_backends

from tests.infra.cfn import TEMPLATES

pytestmark = [
    pytest.mark.infra,
    # moto warns about the resource types its CloudFormation skips (cross-group
    # security-group rules, queue policies); the template tests cover those.
    pytest.mark.filterwarnings("ignore:Tried to parse AWS::"),
]

REGION = "us-east-1"
PREFIX = "chatsvc-dev"
KEY_ARN = f"arn:aws:kms:{REGION}:123456789012:key/11111111-2222-3333-4444-555555555555"


def _with_cfn_tags_and_attributes(model, attributes_key, apply_attributes):
    """moto's CloudFormation creates ELBv2 load balancers and target groups but drops
    their Tags and *Attributes properties. Apply them the way CloudFormation does, from
    the properties moto has already resolved (Refs, Ifs, parameters), so the tests see
    exactly what the template asks for."""
    original = model.create_from_cloudformation_json.__func__

    def create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        resource = original(
            cls, resource_name, cloudformation_json, account_id, region_name, **kwargs
        )
        backend = elbv2_backends[account_id][region_name]
        properties = cloudformation_json["Properties"]
        if properties.get("Tags"):
            backend.add_tags([resource.arn], properties["Tags"])
        attributes = {a["Key"]: str(a["Value"]) for a in properties.get(attributes_key, [])}
        if attributes:
            apply_attributes(backend, resource.arn, attributes)
        return resource

    return classmethod(create)


@pytest.fixture(scope="module")
def aws():
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    with pytest.MonkeyPatch.context() as patch, mock_aws():
        patch.setattr(
            FakeTargetGroup,
            "create_from_cloudformation_json",
            _with_cfn_tags_and_attributes(
                FakeTargetGroup,
                "TargetGroupAttributes",
                lambda backend, arn, attrs: backend.modify_target_group_attributes(arn, attrs),
            ),
        )
        patch.setattr(
            FakeLoadBalancer,
            "create_from_cloudformation_json",
            _with_cfn_tags_and_attributes(
                FakeLoadBalancer,
                "LoadBalancerAttributes",
                lambda backend, arn, attrs: backend.modify_load_balancer_attributes(arn, attrs),
            ),
        )
        yield lambda service: boto3.client(service, region_name=REGION)


def create_stack(aws, name: str, template: str, **params) -> dict:
    cfn = aws("cloudformation")
    cfn.create_stack(
        StackName=name,
        TemplateBody=(TEMPLATES / template).read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": str(v)} for k, v in params.items()],
        Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
    )
    stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack.get("StackStatusReason")
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


@pytest.fixture(scope="module")
def network(aws):
    return create_stack(aws, "network", "network.yaml", Prefix=PREFIX, KmsKeyArn=KEY_ARN)


@pytest.fixture(scope="module")
def security_groups(aws, network):
    return create_stack(
        aws,
        "security-groups",
        "security-groups.yaml",
        Prefix=PREFIX,
        VpcId=network["VpcId"],
        ProductionListenerPort=80,
        NatPublicIp1=network["NatPublicIp1"],
        NatPublicIp2=network["NatPublicIp2"],
    )


@pytest.fixture(scope="module")
def load_balancer(aws, network, security_groups):
    create_stack(
        aws,
        "load-balancer",
        "load-balancer.yaml",
        LoadBalancerName=PREFIX,
        VpcId=network["VpcId"],
        PublicSubnetIds=network["PublicSubnetIds"],
        SecurityGroupId=security_groups["LoadBalancerSecurityGroupId"],
        LiveColor="green",
        BlueImageTag="0123abcd0123",
        GreenImageTag="fedc4321fedc",
        BlueTemplatePrefix="chatsvc/templates/releases/blue-run/",
        GreenTemplatePrefix="chatsvc/templates/releases/green-run/",
    )
    elbv2 = aws("elbv2")
    (lb,) = elbv2.describe_load_balancers(Names=[PREFIX])["LoadBalancers"]
    return lb


@pytest.fixture(scope="module")
def data(aws):
    return create_stack(aws, "data", "data.yaml", Prefix=PREFIX, KmsKeyArn=KEY_ARN)


def test_network_spans_two_zones_with_public_and_private_subnets(aws, network):
    ec2 = aws("ec2")
    public = network["PublicSubnetIds"].split(",")
    private = network["PrivateSubnetIds"].split(",")
    assert len(public) == len(private) == 2
    subnets = ec2.describe_subnets(SubnetIds=public + private)["Subnets"]
    assert {s["VpcId"] for s in subnets} == {network["VpcId"]}
    zones = {s["SubnetId"]: s["AvailabilityZone"] for s in subnets}
    assert len({zones[s] for s in public}) == 2 and len({zones[s] for s in private}) == 2
    assert ec2.describe_nat_gateways()["NatGateways"], "no NAT gateway"
    endpoints = ec2.describe_vpc_endpoints()["VpcEndpoints"]
    assert {e["ServiceName"].rsplit(".", 1)[1] for e in endpoints} >= {"s3", "dynamodb"}


def test_one_public_route_table_via_the_gateway_two_private_via_nat(aws, network):
    ec2 = aws("ec2")
    tables = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [network["VpcId"]]}])
    defaults = [
        route
        for table in tables["RouteTables"]
        for route in table["Routes"]
        if route.get("DestinationCidrBlock") == "0.0.0.0/0"
    ]
    via_nat = [r for r in defaults if "NatGatewayId" in r]
    via_igw = [r for r in defaults if r.get("GatewayId", "").startswith("igw-")]
    assert len(via_nat) == 2 and len(via_igw) == 1 and len(defaults) == 3, defaults


def test_tasks_accept_only_the_load_balancer_on_8000(aws, network, security_groups):
    ec2 = aws("ec2")
    groups = {
        g["GroupId"]: g
        for g in ec2.describe_security_groups(GroupIds=list(security_groups.values()))[
            "SecurityGroups"
        ]
    }
    alb = groups[security_groups["LoadBalancerSecurityGroupId"]]
    assert sorted(p["FromPort"] for p in alb["IpPermissions"]) == [80, 8080]
    by_port = {p["FromPort"]: [r["CidrIp"] for r in p["IpRanges"]] for p in alb["IpPermissions"]}
    assert by_port[80] == ["0.0.0.0/0"]
    # The test listener: only the (one, in dev) NAT gateway's address, where the smoke
    # test comes from; TestListenerCidr is empty by default.
    (address,) = ec2.describe_addresses()["Addresses"]
    assert by_port[8080] == [f"{address['PublicIp']}/32"]
    assert network["NatPublicIp1"] == network["NatPublicIp2"] == address["PublicIp"]
    # The cross-group rules are separate resources (AWS::EC2::SecurityGroupIngress)
    # which moto's CloudFormation does not create; the template test covers them.


def test_listeners_production_80_and_test_8080_forward_by_live_color(aws, load_balancer):
    elbv2 = aws("elbv2")
    listeners = elbv2.describe_listeners(LoadBalancerArn=load_balancer["LoadBalancerArn"])[
        "Listeners"
    ]
    by_port = {listener["Port"]: listener for listener in listeners}
    assert sorted(by_port) == [80, 8080]  # no certificate given: production on 80
    assert {listener["Protocol"] for listener in listeners} == {"HTTP"}
    groups = elbv2.describe_target_groups(LoadBalancerArn=load_balancer["LoadBalancerArn"])[
        "TargetGroups"
    ]
    arn_by_name = {g["TargetGroupName"]: g["TargetGroupArn"] for g in groups}
    production = by_port[80]["DefaultActions"][0]
    test = by_port[8080]["DefaultActions"][0]
    assert production["Type"] == test["Type"] == "forward"
    assert production["TargetGroupArn"] == arn_by_name[f"{PREFIX}-green"]  # LiveColor=green
    assert test["TargetGroupArn"] == arn_by_name[f"{PREFIX}-blue"]


def test_load_balancer_idle_timeout_suits_websockets(aws, load_balancer):
    attributes = aws("elbv2").describe_load_balancer_attributes(
        LoadBalancerArn=load_balancer["LoadBalancerArn"]
    )["Attributes"]
    values = {a["Key"]: a["Value"] for a in attributes}
    assert int(values["idle_timeout.timeout_seconds"]) == 120  # > the 20 s ping interval
    assert values["routing.http.drop_invalid_header_fields.enabled"] == "true"
    assert load_balancer["Scheme"] == "internet-facing"


def test_target_groups_are_tagged_with_color_live_image_and_templates(aws, load_balancer):
    elbv2 = aws("elbv2")
    groups = elbv2.describe_target_groups(LoadBalancerArn=load_balancer["LoadBalancerArn"])[
        "TargetGroups"
    ]
    assert len(groups) == 2
    descriptions = elbv2.describe_tags(ResourceArns=[g["TargetGroupArn"] for g in groups])[
        "TagDescriptions"
    ]
    tags = {d["ResourceArn"]: {t["Key"]: t["Value"] for t in d["Tags"]} for d in descriptions}
    by_color = {tags[g["TargetGroupArn"]]["color"]: (g, tags[g["TargetGroupArn"]]) for g in groups}
    assert set(by_color) == {"blue", "green"}
    assert by_color["blue"][1] == {
        "color": "blue",
        "live": "false",
        "image": "0123abcd0123",
        "templates": "chatsvc/templates/releases/blue-run/",
    }
    assert by_color["green"][1] == {
        "color": "green",
        "live": "true",
        "image": "fedc4321fedc",
        "templates": "chatsvc/templates/releases/green-run/",
    }
    for group, _ in by_color.values():
        assert group["Port"] == 8000 and group["Protocol"] == "HTTP"
        assert group["TargetType"] == "ip"
        assert group["HealthCheckPath"] == "/healthz"
        attributes = elbv2.describe_target_group_attributes(TargetGroupArn=group["TargetGroupArn"])
        values = {a["Key"]: a["Value"] for a in attributes["Attributes"]}
        assert int(values["deregistration_delay.timeout_seconds"]) <= 30


def test_table_keys_and_billing(aws, data):
    dynamodb = aws("dynamodb")
    table = dynamodb.describe_table(TableName=data["TableName"])["Table"]
    assert data["TableName"] == f"{PREFIX}-messages"
    assert table["KeySchema"] == [
        {"AttributeName": "connection_id", "KeyType": "HASH"},
        {"AttributeName": "message_id", "KeyType": "RANGE"},
    ]
    assert sorted(table["AttributeDefinitions"], key=lambda a: a["AttributeName"]) == [
        {"AttributeName": "connection_id", "AttributeType": "S"},
        {"AttributeName": "message_id", "AttributeType": "S"},
    ]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    # moto's CloudFormation ignores the table's SSESpecification, TimeToLiveSpecification
    # and PointInTimeRecoverySpecification: test_shapes_match checks them in the template.


def test_queue_redrives_to_its_dlq_after_five_receives(aws, data):
    sqs = aws("sqs")
    attributes = sqs.get_queue_attributes(QueueUrl=data["QueueUrl"], AttributeNames=["All"])[
        "Attributes"
    ]
    redrive = json.loads(attributes["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == data["DeadLetterQueueArn"]
    assert int(redrive["maxReceiveCount"]) == 5
    assert attributes["VisibilityTimeout"] == "60"
    assert attributes["MessageRetentionPeriod"] == "345600"
    assert attributes["ReceiveMessageWaitTimeSeconds"] == "20"
    assert attributes["KmsMasterKeyId"] == KEY_ARN
    assert data["DeadLetterQueueName"] == data["QueueName"] + "-dlq"
    dlq = sqs.get_queue_attributes(QueueUrl=data["DeadLetterQueueUrl"], AttributeNames=["All"])[
        "Attributes"
    ]
    assert dlq["MessageRetentionPeriod"] == "1209600"
    assert dlq["KmsMasterKeyId"] == KEY_ARN


def test_attachments_bucket_is_named_for_the_tasks_and_encrypted_with_the_key(aws):
    outputs = create_stack(
        aws,
        "data-attachments",
        "data.yaml",
        Prefix="chatsvc-staging",
        KmsKeyArn=KEY_ARN,
        AttachmentCorsOrigins="https://lms.example.edu,https://canvas.example.com",
        AttachmentExpirationDays=400,
    )
    name = outputs["AttachmentsBucketName"]
    # The name web-service.yaml and worker.yaml derive from the table's prefix.
    assert name == f"chatsvc-staging-attachments-123456789012-{REGION}"
    assert outputs["TableName"] == "chatsvc-staging-messages"
    assert outputs["AttachmentsBucketArn"] == f"arn:aws:s3:::{name}"
    s3 = aws("s3")
    (rule,) = s3.get_bucket_encryption(Bucket=name)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": KEY_ARN,
    }
    # moto's CloudFormation applies no CORS, lifecycle, public access block or
    # ownership to a bucket: test_shapes_match checks them in the template.
