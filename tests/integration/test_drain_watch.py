"""A web process drains its sockets when the load balancer starts draining its target.

ECS closes WebSockets at the end of the deregistration delay and sends
SIGTERM only after it; the server must spread its 1012 closes before then.
The load balancer here is moto's, over HTTP.
"""

import asyncio
import json
import time

import boto3
import pytest
import websockets

from tests import factories

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TARGET = {"Id": "10.0.1.5", "Port": 8000}


@pytest.fixture
def target_group(aws):
    def client(service):
        return boto3.client(service, region_name="us-east-1", endpoint_url=aws.endpoint)

    ec2, elb = client("ec2"), client("elbv2")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{n}.0/24", AvailabilityZone=f"us-east-1{z}")[
            "Subnet"
        ]["SubnetId"]
        for n, z in ((1, "a"), (2, "b"))
    ]
    balancer = elb.create_load_balancer(Name=f"lb-{vpc[-6:]}", Subnets=subnets)
    arn = elb.create_target_group(
        Name=f"tg-{vpc[-6:]}", Protocol="HTTP", Port=8000, VpcId=vpc, TargetType="ip"
    )["TargetGroups"][0]["TargetGroupArn"]
    elb.create_listener(
        LoadBalancerArn=balancer["LoadBalancers"][0]["LoadBalancerArn"],
        Protocol="HTTP",
        Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": arn}],
    )
    elb.register_targets(TargetGroupArn=arn, Targets=[TARGET])
    return elb, arn


async def test_deregistration_starts_a_spread_1012_drain_before_sigterm(start_server, target_group):
    elb, arn = target_group
    server = start_server(
        CHAT_TARGET_GROUP_ARN=arn,
        CHAT_TARGET_ADDRESS=f"{TARGET['Id']}:{TARGET['Port']}",
        CHAT_DRAIN_WATCH_SECONDS="1",
        CHAT_DRAIN_SECONDS="3",
    )
    issued = await asyncio.to_thread(factories.tenant_with_key, "lb", max_sockets_per_user=50)
    room = (await asyncio.to_thread(factories.room_for, issued)).connection_id
    token = await asyncio.to_thread(factories.token_for, issued)
    sockets = []
    for _ in range(12):
        socket = await websockets.connect(server.ws_url)
        await socket.send(json.dumps({"type": "auth", "token": token}))
        await socket.send(json.dumps({"type": "join", "connection_id": room}))
        sockets.append(socket)
    await asyncio.sleep(2)  # the watch has seen the target registered
    assert all(socket.close_code is None for socket in sockets)

    deregistered = time.monotonic()
    await asyncio.to_thread(elb.deregister_targets, TargetGroupArn=arn, Targets=[TARGET])

    async def closed_at(socket):
        async with asyncio.timeout(10):
            try:
                async for _ in socket:  # read on: the close frame queues behind the others
                    pass
            except websockets.ConnectionClosed:
                pass
        return time.monotonic() - deregistered, socket.close_code

    closes = await asyncio.gather(*(closed_at(socket) for socket in sockets))
    assert {code for _, code in closes} == {1012}
    moments = sorted(moment for moment, _ in closes)
    assert moments[-1] - moments[0] > 1.0  # spread over the drain window, not all at once
    assert moments[-1] < 1 + 3 + 2  # one watch interval + the window + slack
    assert server.process.poll() is None  # still serving until SIGTERM
