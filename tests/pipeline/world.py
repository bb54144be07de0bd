"""Builds the AWS side of a chatsvc environment in moto (in-process or server).

The same shapes the CloudFormation templates create: an ALB with a production
listener (80 here, no certificate) and a test listener (8080), two target groups
tagged color/live/image, an ECS cluster with a blue and a green service.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

REGION = "us-east-1"
PREFIX = "chatsvc"


@dataclass
class World:
    lb_name: str
    lb_arn: str
    production_listener: str
    test_listener: str
    tg: dict[str, str]  # color -> target group ARN
    cluster: str = ""
    subnets: list[str] = field(default_factory=list)
    security_groups: list[str] = field(default_factory=list)
    task_definitions: dict[str, str] = field(default_factory=dict)  # color -> ARN


def clients(session_kwargs: dict | None = None):
    import boto3

    kwargs = {"region_name": REGION, **(session_kwargs or {})}
    names = ("ec2", "elbv2", "ecs", "cloudformation", "s3", "ecr", "cloudwatch")
    return {name: boto3.client(name, **kwargs) for name in names}


def network(ec2) -> tuple[str, list[str], list[str]]:
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    # moto's awsvpc tasks need DNS host names on the VPC (real VPCs want them too)
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=az)["Subnet"]["SubnetId"]
        for cidr, az in (("10.0.1.0/24", f"{REGION}a"), ("10.0.2.0/24", f"{REGION}b"))
    ]
    sg = ec2.create_security_group(GroupName="chatsvc-alb", Description="alb", VpcId=vpc)
    return vpc, subnets, [sg["GroupId"]]


def build(
    c: dict,
    *,
    name: str = "chatsvc-alb",
    live: str = "blue",
    images: dict[str, str] | None = None,
    healthy: tuple[str, ...] = ("blue", "green"),
    services: bool = False,
    templates: dict[str, str] | None = None,
) -> World:
    """Create the load balancer; `live` is where production forwards."""
    ec2, elbv2 = c["ec2"], c["elbv2"]
    vpc, subnets, sgs = network(ec2)
    lb = elbv2.create_load_balancer(
        Name=name, Subnets=subnets, SecurityGroups=sgs, Scheme="internet-facing", Type="application"
    )["LoadBalancers"][0]
    tg = {}
    for color in ("blue", "green"):
        tags = [
            {"Key": "color", "Value": color},
            {"Key": "live", "Value": str(color == live).lower()},
        ]
        if images and images.get(color):
            tags.append({"Key": "image", "Value": images[color]})
        if templates and templates.get(color):
            tags.append({"Key": "templates", "Value": templates[color]})
        tg[color] = elbv2.create_target_group(
            Name=f"{name}-{color}"[:32],
            Protocol="HTTP",
            Port=8000,
            VpcId=vpc,
            TargetType="ip",
            HealthCheckPath="/healthz",
            Tags=tags,
        )["TargetGroups"][0]["TargetGroupArn"]
        if color in healthy:
            set_healthy(elbv2, tg[color], True)
    test = "green" if live == "blue" else "blue"
    prod_l = elbv2.create_listener(
        LoadBalancerArn=lb["LoadBalancerArn"],
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg[live]}],
    )["Listeners"][0]["ListenerArn"]
    test_l = elbv2.create_listener(
        LoadBalancerArn=lb["LoadBalancerArn"],
        Protocol="HTTP",
        Port=8080,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg[test]}],
    )["Listeners"][0]["ListenerArn"]
    world = World(
        name, lb["LoadBalancerArn"], prod_l, test_l, tg, subnets=subnets, security_groups=sgs
    )
    if services:
        add_services(c, world, images or {})
    return world


def set_healthy(elbv2, tg_arn: str, healthy: bool) -> None:
    """moto reports registered IP targets healthy; no target means none healthy."""
    if healthy:
        elbv2.register_targets(TargetGroupArn=tg_arn, Targets=[{"Id": "10.0.1.10", "Port": 8000}])
    else:
        current = elbv2.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
        if current:
            elbv2.deregister_targets(
                TargetGroupArn=tg_arn, Targets=[{"Id": t["Target"]["Id"]} for t in current]
            )


def register_task_definition(ecs, image_tag: str) -> str:
    return ecs.register_task_definition(
        family=PREFIX,
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        containerDefinitions=[
            {
                "name": "web",
                "image": f"123456789012.dkr.ecr.{REGION}.amazonaws.com/chatsvc:{image_tag}",
                "memory": 512,
                "cpu": 256,
                "portMappings": [{"containerPort": 8000}],
            }
        ],
    )["taskDefinition"]["taskDefinitionArn"]


def add_services(c: dict, world: World, images: dict[str, str]) -> None:
    ecs = c["ecs"]
    world.cluster = ecs.create_cluster(clusterName=PREFIX)["cluster"]["clusterName"]
    for color in ("blue", "green"):
        td = register_task_definition(ecs, images.get(color) or "initial")
        world.task_definitions[color] = td
        ecs.create_service(
            cluster=world.cluster,
            serviceName=f"{PREFIX}-{color}",
            taskDefinition=td,
            desiredCount=1,
            launchType="FARGATE",
            networkConfiguration={
                "awsvpcConfiguration": {
                    "subnets": world.subnets,
                    "securityGroups": world.security_groups,
                }
            },
            loadBalancers=[
                {"targetGroupArn": world.tg[color], "containerName": "web", "containerPort": 8000}
            ],
        )


def forwards_to(elbv2, listener_arn: str) -> str:
    listener = elbv2.describe_listeners(ListenerArns=[listener_arn])["Listeners"][0]
    return listener["DefaultActions"][0]["TargetGroupArn"]


def tags_of(elbv2, arn: str) -> dict[str, str]:
    desc = elbv2.describe_tags(ResourceArns=[arn])["TagDescriptions"][0]
    return {t["Key"]: t["Value"] for t in desc["Tags"]}


def color_of(world: World, tg_arn: str) -> str:
    return next(color for color, arn in world.tg.items() if arn == tg_arn)


# ------------------------------------------------- the release stack, in moto's CloudFormation

TEMPLATES = Path(__file__).resolve().parents[2] / "cloudformation"


def _apply_cfn_tags(backend, arn: str, properties: dict) -> None:
    if properties.get("Tags"):
        backend.add_tags([arn], properties["Tags"])


def _conditions_used(node) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Fn::If" and isinstance(value, list) and value:
                found.add(value[0])
            found |= _conditions_used(value)
    elif isinstance(node, list):
        for item in node:
            found |= _conditions_used(item)
    return found


def patch_moto_cloudformation(monkeypatch) -> None:
    """Fill two gaps of moto's CloudFormation where it differs from AWS:

    - an update with the same template re-applies only resources that `Ref` a changed
      parameter, not those whose `Fn::If` condition depends on it (the listeners
      follow LiveColor through the BlueIsLive condition);
    - it drops a target group's Tags, and cannot update a target group at all.
      Apply the Tags on create and update from the properties moto has resolved.
    """
    from moto.cloudformation import parsing
    from moto.elbv2.models import FakeTargetGroup, elbv2_backends

    diff = parsing.ResourceMap.build_resource_diff

    def build_resource_diff(self, other_template, parameters=None):
        actions = diff(self, other_template, parameters)
        changed = {
            key for key in parameters or {} if self.input_parameters.get(key) != parameters[key]
        }
        conditions = {
            name
            for name, body in other_template.get("Conditions", {}).items()
            if changed & set(parsing.get_references_from_template(body))
        }
        for name, body in other_template["Resources"].items():
            if name in self._resource_json_map and name not in actions["Modify"]:
                if conditions & _conditions_used(body):
                    actions["Modify"].append(name)
        return actions

    monkeypatch.setattr(parsing.ResourceMap, "build_resource_diff", build_resource_diff)

    create = FakeTargetGroup.create_from_cloudformation_json.__func__

    def created(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        group = create(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        _apply_cfn_tags(
            elbv2_backends[account_id][region_name], group.arn, cloudformation_json["Properties"]
        )
        return group

    def updated(
        cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name
    ):
        _apply_cfn_tags(
            elbv2_backends[account_id][region_name],
            original_resource.arn,
            cloudformation_json["Properties"],
        )
        return original_resource

    monkeypatch.setattr(FakeTargetGroup, "create_from_cloudformation_json", classmethod(created))
    monkeypatch.setattr(FakeTargetGroup, "update_from_cloudformation_json", classmethod(updated))


def release_parameters(
    live: str, images: dict[str, str], templates: dict[str, str] | None = None
) -> dict[str, str]:
    """What the Deploy action passes: LiveColor, each color's image and templates."""
    params = {"LiveColor": live}
    for color in ("blue", "green"):
        params[f"{color.capitalize()}ImageTag"] = images[color]
        params[f"{color.capitalize()}TemplatePrefix"] = (templates or {}).get(
            color, "chatsvc/templates/releases/initial/"
        )
    return params


def stack_parameters(params: dict[str, str]) -> list[dict]:
    declared = yaml_parameters()
    return [
        {"ParameterKey": key, "ParameterValue": value}
        for key, value in params.items()
        if key in declared
    ]


def yaml_parameters() -> dict[str, dict]:
    from tests.infra.cfn import load

    return load("load-balancer.yaml")["Parameters"]


def defaults(exclude: set[str]) -> list[dict]:
    """Every other parameter at its default, given explicitly: moto, unlike
    CloudFormation, keeps no defaults for a later UsePreviousValue."""
    return [
        {"ParameterKey": key, "ParameterValue": str(spec["Default"])}
        for key, spec in yaml_parameters().items()
        if key not in exclude and "Default" in spec
    ]


def build_release(
    c: dict,
    *,
    name: str,
    live: str = "blue",
    images: dict[str, str],
    desired: int = 1,
    templates: dict[str, str] | None = None,
) -> World:
    """The release stack's traffic half, for real in moto's CloudFormation: the
    template is cloudformation/load-balancer.yaml (the listeners, target groups and
    their tags, all decided by LiveColor); the ECS services come next to it."""
    ec2 = c["ec2"]
    _, subnets, sgs = network(ec2)
    vpc = ec2.describe_subnets(SubnetIds=subnets[:1])["Subnets"][0]["VpcId"]
    base = {
        "LoadBalancerName": name,
        "VpcId": vpc,
        "PublicSubnetIds": ",".join(subnets),
        "SecurityGroupId": sgs[0],
    }
    c["cloudformation"].create_stack(
        StackName=f"{name}-release",
        TemplateBody=(TEMPLATES / "load-balancer.yaml").read_text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in base.items()]
        + stack_parameters(release_parameters(live, images, templates))
        + defaults(exclude=set(base) | set(release_parameters(live, images))),
    )
    elbv2 = c["elbv2"]
    lb = elbv2.describe_load_balancers(Names=[name])["LoadBalancers"][0]
    listeners = {
        item["Port"]: item["ListenerArn"]
        for item in elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    }
    groups = elbv2.describe_target_groups(LoadBalancerArn=lb["LoadBalancerArn"])["TargetGroups"]
    tg = {g["TargetGroupName"].rsplit("-", 1)[1]: g["TargetGroupArn"] for g in groups}
    world = World(
        name,
        lb["LoadBalancerArn"],
        listeners[80],
        listeners[8080],
        tg,
        subnets=subnets,
        security_groups=sgs,
    )
    add_services(c, world, images)
    for color in ("blue", "green"):
        c["ecs"].update_service(
            cluster=world.cluster, service=f"{PREFIX}-{color}", desiredCount=desired
        )
        register_healthy(elbv2, tg[color], desired)
    return world


def register_healthy(elbv2, tg_arn: str, count: int) -> None:
    """moto reports registered IP targets healthy: `count` of them, in all."""
    elbv2.register_targets(
        TargetGroupArn=tg_arn,
        Targets=[{"Id": f"10.0.1.{10 + n}", "Port": 8000} for n in range(count)],
    )


def release_config(world: World):
    from pipeline.swap_lambda import Config

    return Config(world.lb_name, f"{world.lb_name}-release", world.cluster, PREFIX)
