"""Builds the AWS side of a chatsvc environment in moto (in-process or server).

The same shapes the CloudFormation templates create: an ALB with a production
listener (80 here, no certificate) and a test listener (8080), two target groups
tagged color/live/image, an ECS cluster with a blue and a green service.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
    return {name: boto3.client(name, **kwargs) for name in ("ec2", "elbv2", "ecs")}


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
