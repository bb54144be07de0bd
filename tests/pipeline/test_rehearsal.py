"""A release rehearsal against moto's server over HTTP (the way CodeBuild and the
Lambda reach AWS): discover, deploy to the test service, swap; a second release
that swaps back; and a swap that fails midway, leaving production healthy."""

from __future__ import annotations

import json
import uuid

import boto3
import pytest
from botocore.stub import ANY, Stubber

from pipeline import deployment_tags, swap_lambda
from tests.pipeline import world
from tests.pipeline.faults import Killed, die, fail, inject

pytestmark = pytest.mark.integration


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", world.REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)  # every boto3 client, programs too
    return world.clients({"endpoint_url": moto_endpoint})


@pytest.fixture
def env(aws):
    """A fresh environment (its own names) on the shared moto server."""
    name = f"alb-{uuid.uuid4().hex[:8]}"
    return world.build(aws, name=name, images=None, services=True)


def discover(tmp_path, lb_name: str, tag: str) -> dict:
    out = tmp_path / f"deployment-{tag}.json"
    code = deployment_tags.main(["--load-balancer", lb_name, "--image-tag", tag, "--out", str(out)])
    assert code == 0
    return json.loads(out.read_text())


def deploy(aws, w, params: dict) -> None:
    """What the CloudFormation deploy action does with deployment.json: each color's
    service runs its image tag (only the test one changes), and each target group's
    `image` tag names it; `live` follows LiveColor."""
    ecs, elbv2 = aws["ecs"], aws["elbv2"]
    for color in ("blue", "green"):
        tag = params[f"{color.capitalize()}ImageTag"]
        service = ecs.describe_services(cluster=w.cluster, services=[f"{world.PREFIX}-{color}"])
        current = service["services"][0]["taskDefinition"]
        image = ecs.describe_task_definition(taskDefinition=current)["taskDefinition"][
            "containerDefinitions"
        ][0]["image"]
        if not image.endswith(f":{tag}"):
            td = world.register_task_definition(ecs, tag)
            ecs.update_service(
                cluster=w.cluster, service=f"{world.PREFIX}-{color}", taskDefinition=td
            )
        elbv2.add_tags(
            ResourceArns=[w.tg[color]],
            Tags=[
                {"Key": "image", "Value": tag},
                {"Key": "live", "Value": str(color == params["LiveColor"]).lower()},
            ],
        )


def service_image(aws, w, color: str) -> str:
    ecs = aws["ecs"]
    service = ecs.describe_services(cluster=w.cluster, services=[f"{world.PREFIX}-{color}"])
    td = ecs.describe_task_definition(taskDefinition=service["services"][0]["taskDefinition"])
    return td["taskDefinition"]["containerDefinitions"][0]["image"].rsplit(":", 1)[1]


def pipeline_swap(aws, w, job_id: str, *, elbv2=None, ok=True) -> dict:
    """The Lambda invoke action: handler + CodePipeline job result (stubbed)."""
    codepipeline = boto3.client("codepipeline", region_name=world.REGION)
    with Stubber(codepipeline) as stubber:
        if ok:
            stubber.add_response(
                "put_job_success_result", {}, {"jobId": job_id, "executionDetails": ANY}
            )
        else:
            stubber.add_response(
                "put_job_failure_result", {}, {"jobId": job_id, "failureDetails": ANY}
            )
        event = {
            "CodePipeline.job": {
                "id": job_id,
                "data": {
                    "actionConfiguration": {
                        "configuration": {
                            "UserParameters": json.dumps({"load_balancer": w.lb_name})
                        }
                    }
                },
            }
        }
        result = swap_lambda.handler(event, None, elbv2=elbv2, codepipeline=codepipeline)
        stubber.assert_no_pending_responses()
    return result


def assert_live(aws, w, live: str, images: dict[str, str]) -> None:
    """Listeners, tags and services all agree on what is live and what runs where."""
    elbv2 = aws["elbv2"]
    test = "green" if live == "blue" else "blue"
    assert world.color_of(w, world.forwards_to(elbv2, w.production_listener)) == live
    assert world.color_of(w, world.forwards_to(elbv2, w.test_listener)) == test
    for color in ("blue", "green"):
        tags = world.tags_of(elbv2, w.tg[color])
        assert tags["color"] == color
        assert tags["live"] == str(color == live).lower()
        assert tags["image"] == images[color]
        assert service_image(aws, w, color) == images[color]
    prod = world.forwards_to(elbv2, w.production_listener)
    assert swap_lambda.healthy_count(elbv2, prod) > 0


def test_two_releases_swap_there_and_back(aws, env, tmp_path):
    w = env
    # Release 1 (the target groups carry no image yet): both colors get it, blue live.
    first = discover(tmp_path, w.lb_name, "release00001")
    assert first["FirstDeployment"] == "true"
    assert (first["LiveColor"], first["TestColor"]) == ("blue", "green")
    deploy(aws, w, first)
    assert_live(aws, w, "blue", {"blue": "release00001", "green": "release00001"})

    # Release 2: to green (test), verified, swapped.
    second = discover(tmp_path, w.lb_name, "release00002")
    assert second["FirstDeployment"] == "false"
    assert (second["LiveColor"], second["TestColor"]) == ("blue", "green")
    assert (second["BlueImageTag"], second["GreenImageTag"]) == ("release00001", "release00002")
    assert second["LiveTargetGroupArn"] == w.tg["blue"]
    assert second["TestTargetGroupArn"] == w.tg["green"]
    deploy(aws, w, second)
    assert_live(aws, w, "blue", {"blue": "release00001", "green": "release00002"})
    assert pipeline_swap(aws, w, "job-2")["ok"] is True
    assert_live(aws, w, "green", {"blue": "release00001", "green": "release00002"})

    # Release 3: to blue (now test), and swap back.
    third = discover(tmp_path, w.lb_name, "release00003")
    assert (third["LiveColor"], third["TestColor"]) == ("green", "blue")
    assert third["LiveImageTag"] == "release00002"
    assert (third["BlueImageTag"], third["GreenImageTag"]) == ("release00003", "release00002")
    deploy(aws, w, third)
    assert pipeline_swap(aws, w, "job-3")["ok"] is True
    assert_live(aws, w, "blue", {"blue": "release00003", "green": "release00002"})

    # A retried job (Lambda's retry) changes nothing.
    assert pipeline_swap(aws, w, "job-3")["ok"] is True
    assert_live(aws, w, "blue", {"blue": "release00003", "green": "release00002"})

    # Rollback by hand: the previous release is still on the test service.
    assert swap_lambda.main(["--load-balancer", w.lb_name, "--to-color", "green"]) == 0
    assert_live(aws, w, "green", {"blue": "release00003", "green": "release00002"})


def test_failure_midway_through_a_swap_leaves_production_healthy(aws, env, tmp_path):
    w = env
    deploy(aws, w, discover(tmp_path, w.lb_name, "release00001"))
    deploy(aws, w, discover(tmp_path, w.lb_name, "release00002"))
    images = {"blue": "release00001", "green": "release00002"}

    # The second listener update fails: the swap is undone and reported as failed.
    elbv2 = boto3.client("elbv2", region_name=world.REGION)
    inject(elbv2, "ModifyListener", {2}, fail("ModifyListener"))
    result = pipeline_swap(aws, w, "job-a", elbv2=elbv2, ok=False)
    assert "rolled back" in result["message"]
    assert_live(aws, w, "blue", images)

    # The new release's targets go unhealthy: the swap is refused.
    world.set_healthy(aws["elbv2"], w.tg["green"], False)
    result = pipeline_swap(aws, w, "job-b", ok=False)
    assert "no healthy targets" in result["message"]
    assert_live(aws, w, "blue", images)
    world.set_healthy(aws["elbv2"], w.tg["green"], True)

    # The Lambda dies between the two listener updates: production is on the new,
    # health-checked group; discovery refuses to start another release; the
    # retried job finishes the swap.
    elbv2 = boto3.client("elbv2", region_name=world.REGION)
    inject(elbv2, "ModifyListener", {2}, die)
    with pytest.raises(Killed):
        pipeline_swap(aws, w, "job-c", elbv2=elbv2)
    prod = world.forwards_to(aws["elbv2"], w.production_listener)
    assert prod == w.tg["green"]
    assert swap_lambda.healthy_count(aws["elbv2"], prod) > 0
    out = tmp_path / "blocked.json"
    assert (
        deployment_tags.main(
            ["--load-balancer", w.lb_name, "--image-tag", "release00003", "--out", str(out)]
        )
        == 1
    )
    assert pipeline_swap(aws, w, "job-c")["ok"] is True
    assert_live(aws, w, "green", images)
