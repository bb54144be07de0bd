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


async def closed_since(socket, start: float, timeout: float) -> tuple[float, int]:
    """(seconds from `start` until the socket closed, its close code)."""
    async with asyncio.timeout(timeout):
        try:
            async for _ in socket:  # read on: the close frame queues behind the others
                pass
        except websockets.ConnectionClosed:
            pass
    return time.monotonic() - start, socket.close_code


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

    closes = await asyncio.gather(*(closed_since(s, deregistered, 10) for s in sockets))
    assert {code for _, code in closes} == {1012}
    moments = sorted(moment for moment, _ in closes)
    assert moments[-1] - moments[0] > 1.0  # spread over the drain window, not all at once
    assert moments[-1] < 1 + 3 + 2  # one watch interval + the window + slack
    assert server.process.poll() is None  # still serving until SIGTERM


async def test_after_a_swap_the_old_colour_moves_production_sockets_off_gradually(
    start_server, target_group
):
    """Its target group's live tag turns false: the sockets that came through the
    production listener get 1012 spread over the window; the test listener's stay."""
    elb, arn = target_group
    await asyncio.to_thread(
        elb.add_tags, ResourceArns=[arn], Tags=[{"Key": "live", "Value": "true"}]
    )
    server = start_server(
        CHAT_TARGET_GROUP_ARN=arn,
        CHAT_TARGET_ADDRESS=f"{TARGET['Id']}:{TARGET['Port']}",
        CHAT_DRAIN_WATCH_SECONDS="1",
        CHAT_DEMOTED_DRAIN_SECONDS="3",
    )
    issued = await asyncio.to_thread(factories.tenant_with_key, "swap", max_sockets_per_user=50)
    room = (await asyncio.to_thread(factories.room_for, issued)).connection_id
    token = await asyncio.to_thread(factories.token_for, issued)

    async def joined_through(port: int):
        socket = await websockets.connect(
            server.ws_url, additional_headers={"X-Forwarded-Port": str(port)}
        )
        await socket.send(json.dumps({"type": "auth", "token": token}))
        await socket.send(json.dumps({"type": "join", "connection_id": room}))
        return socket

    production = [await joined_through(80) for _ in range(8)]
    testers = [await joined_through(8080) for _ in range(2)]
    await asyncio.sleep(7)  # the watch reads the tag every 6 polls: it has seen "true"
    assert all(s.close_code is None for s in production + testers)

    demoted = time.monotonic()
    await asyncio.to_thread(
        elb.add_tags, ResourceArns=[arn], Tags=[{"Key": "live", "Value": "false"}]
    )

    closes = await asyncio.gather(*(closed_since(s, demoted, 15) for s in production))
    assert {code for _, code in closes} == {1012}
    moments = sorted(moment for moment, _ in closes)
    assert moments[-1] - moments[0] > 1.0  # spread, not all at once
    assert moments[-1] < 6 + 3 + 2  # one tag read interval + the window + slack
    for socket in testers:  # the approvers on :8080 keep theirs

        async def pong(socket=socket):
            while json.loads(await socket.recv())["type"] != "pong":
                pass  # joined, presence: what they were sent meanwhile

        await socket.send(json.dumps({"type": "ping"}))
        await asyncio.wait_for(pong(), 5)
        assert socket.close_code is None
    assert server.process.poll() is None
