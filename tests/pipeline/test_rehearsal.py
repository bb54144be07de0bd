"""A release rehearsal against moto's server over HTTP (the way CodeBuild and the
Lambda reach AWS): discover, deploy to the test color through the release stack
(moto's CloudFormation, cloudformation/load-balancer.yaml), swap through the same
stack; releases there and back, a deploy rolled back after a swap, overlapping runs,
and a retried pipeline action."""

from __future__ import annotations

import io
import json
import uuid
import zipfile

import boto3
import pytest
from botocore.stub import Stubber

from pipeline import deployment_tags, swap_lambda
from tests.pipeline import world

pytestmark = pytest.mark.integration


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", world.REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)  # every boto3 client, programs too
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "1")
    world.patch_moto_cloudformation(monkeypatch)
    return world.clients({"endpoint_url": moto_endpoint})


@pytest.fixture
def name():
    return f"alb-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def lambda_env(name, monkeypatch):
    monkeypatch.setenv("LOAD_BALANCER_NAME", name)
    monkeypatch.setenv("RELEASE_STACK_NAME", f"{name}-release")
    monkeypatch.setenv("CLUSTER_NAME", world.PREFIX)
    monkeypatch.setenv("SERVICE_PREFIX", world.PREFIX)


def discover(tmp_path, name: str, tag: str) -> dict:
    out = tmp_path / f"deployment-{tag}.json"
    templates = f"chatsvc/templates/releases/{tag}/"
    code = deployment_tags.main(
        [
            "--load-balancer",
            name,
            "--image-tag",
            tag,
            "--template-prefix",
            templates,
            "--out",
            str(out),
        ]
    )
    assert code == 0
    return json.loads(out.read_text())


class Release:
    """The release stack's traffic half and the web services, deployed like the
    CloudFormation deploy action does with deployment.json."""

    def __init__(self, aws, name: str):
        self.aws, self.name, self.w = aws, name, None

    def deploy(self, params: dict) -> None:
        images = {c: params[f"{c.capitalize()}ImageTag"] for c in ("blue", "green")}
        templates = {c: params[f"{c.capitalize()}TemplatePrefix"] for c in ("blue", "green")}
        if self.w is None:
            self.w = world.build_release(
                self.aws,
                name=self.name,
                live=params["LiveColor"],
                images=images,
                templates=templates,
            )
            return
        cfn = self.aws["cloudformation"]
        stack = cfn.describe_stacks(StackName=f"{self.name}-release")["Stacks"][0]
        given = world.release_parameters(params["LiveColor"], images, templates)
        cfn.update_stack(
            StackName=f"{self.name}-release",
            UsePreviousTemplate=True,
            Parameters=[
                {"ParameterKey": p["ParameterKey"], "ParameterValue": given[p["ParameterKey"]]}
                if p["ParameterKey"] in given
                else {"ParameterKey": p["ParameterKey"], "UsePreviousValue": True}
                for p in stack["Parameters"]
            ],
        )
        ecs = self.aws["ecs"]
        for color, tag in images.items():
            if service_image(self.aws, self.w, color) != tag:
                ecs.update_service(
                    cluster=self.w.cluster,
                    service=f"{world.PREFIX}-{color}",
                    taskDefinition=world.register_task_definition(ecs, tag),
                )

    def parameters(self) -> dict[str, str]:
        stack = self.aws["cloudformation"].describe_stacks(StackName=f"{self.name}-release")
        return {p["ParameterKey"]: p["ParameterValue"] for p in stack["Stacks"][0]["Parameters"]}


def service_image(aws, w, color: str) -> str:
    ecs = aws["ecs"]
    service = ecs.describe_services(cluster=w.cluster, services=[f"{world.PREFIX}-{color}"])
    td = ecs.describe_task_definition(taskDefinition=service["services"][0]["taskDefinition"])
    return td["taskDefinition"]["containerDefinitions"][0]["image"].rsplit(":", 1)[1]


def pipeline_swap(run: dict, job_id: str, *, ok=True) -> dict:
    """The Lambda invoke action with this run's deployment.json, until it is done."""
    body = json.dumps(run)

    class Artifact:
        def get_object(self, **_):
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as archive:
                archive.writestr("deployment.json", body)
            return {"Body": io.BytesIO(buffer.getvalue())}

    codepipeline = boto3.client("codepipeline", region_name=world.REGION)
    token = None
    while True:
        data = {
            "inputArtifacts": [
                {"location": {"s3Location": {"bucketName": "artifacts", "objectKey": job_id}}}
            ]
        }
        if token:
            data["continuationToken"] = token
        with Stubber(codepipeline) as stubber:
            method = "put_job_success_result" if ok else "put_job_failure_result"
            stubber.add_response(method, {}, None)
            result = swap_lambda.handler(
                {"CodePipeline.job": {"id": job_id, "data": data}},
                None,
                codepipeline=codepipeline,
                s3=Artifact(),
            )
            stubber.assert_no_pending_responses()
        if not result.get("pending"):
            return result
        token = json.dumps(result["token"])


def assert_live(aws, release: Release, live: str, images: dict[str, str]) -> None:
    """Listeners, tags, services and the stack's record all agree on what is live."""
    w, elbv2 = release.w, aws["elbv2"]
    test = "green" if live == "blue" else "blue"
    assert world.color_of(w, world.forwards_to(elbv2, w.production_listener)) == live
    assert world.color_of(w, world.forwards_to(elbv2, w.test_listener)) == test
    assert release.parameters()["LiveColor"] == live
    for color in ("blue", "green"):
        tags = world.tags_of(elbv2, w.tg[color])
        assert tags["color"] == color
        assert tags["live"] == str(color == live).lower()
        assert tags["image"] == images[color]
        assert service_image(aws, w, color) == images[color]
    assert swap_lambda.healthy_count(elbv2, w.tg[live]) > 0


def test_three_releases_there_and_back_and_a_rollback(aws, name, lambda_env, tmp_path):
    release = Release(aws, name)
    first = discover(tmp_path, name, "release00001")
    assert first["FirstDeployment"] == "true"
    release.deploy(first)
    assert_live(aws, release, "blue", {"blue": "release00001", "green": "release00001"})

    # Release 2: to green (test), with its own templates; blue keeps release 1's.
    second = discover(tmp_path, name, "release00002")
    assert (second["LiveColor"], second["TestColor"]) == ("blue", "green")
    assert second["BlueTemplatePrefix"] == "chatsvc/templates/releases/release00001/"
    assert second["GreenTemplatePrefix"] == "chatsvc/templates/releases/release00002/"
    release.deploy(second)
    assert_live(aws, release, "blue", {"blue": "release00001", "green": "release00002"})
    assert pipeline_swap(second, "job-2")["ok"] is True
    assert_live(aws, release, "green", {"blue": "release00001", "green": "release00002"})

    # Release 3: to blue (now test), and swap back; a retried action changes nothing.
    third = discover(tmp_path, name, "release00003")
    assert (third["LiveColor"], third["TestColor"]) == ("green", "blue")
    assert third["GreenTemplatePrefix"] == "chatsvc/templates/releases/release00002/"
    release.deploy(third)
    assert pipeline_swap(third, "job-3")["ok"] is True
    assert pipeline_swap(third, "job-3-retry")["message"] == "blue is already live"
    assert_live(aws, release, "blue", {"blue": "release00003", "green": "release00002"})

    # Rollback by hand: the previous release is still on the test service.
    config = swap_lambda.Config(name, f"{name}-release", world.PREFIX, world.PREFIX)
    swap = swap_lambda.Swap(config, aws["cloudformation"], aws["ecs"], aws["elbv2"], "green")
    swap.run(sleep=lambda s: None)
    assert_live(aws, release, "green", {"blue": "release00003", "green": "release00002"})


def test_a_deploy_rolled_back_after_a_swap_keeps_the_approved_release(
    aws, name, lambda_env, tmp_path
):
    """M1: CloudFormation rolls a failed deploy back to the stack's last good state,
    which is the swapped one, so production stays on the release people approved."""
    release = Release(aws, name)
    release.deploy(discover(tmp_path, name, "release00001"))
    second = discover(tmp_path, name, "release00002")
    release.deploy(second)
    assert pipeline_swap(second, "job-2")["ok"] is True
    last_good = release.parameters()

    release.deploy(discover(tmp_path, name, "release00003"))  # to blue, then it fails:
    release.deploy(last_good)  # the rollback re-applies the last good parameters
    assert_live(aws, release, "green", {"blue": "release00001", "green": "release00002"})


def test_overlapping_runs_never_ship_an_unapproved_or_older_release(
    aws, name, lambda_env, tmp_path
):
    """M3: run B deployed over the test color while run A waited for approval
    (possible only if the Release stage's lock is bypassed): approving A is refused;
    approving B ships B."""
    release = Release(aws, name)
    release.deploy(discover(tmp_path, name, "release00001"))
    run_a = discover(tmp_path, name, "release0000a")
    release.deploy(run_a)
    run_b = discover(tmp_path, name, "release0000b")
    release.deploy(run_b)

    refused = pipeline_swap(run_a, "job-a", ok=False)
    assert "not this run's 'release0000a'" in refused["message"]
    assert_live(aws, release, "blue", {"blue": "release00001", "green": "release0000b"})
    assert pipeline_swap(run_b, "job-b")["ok"] is True
    assert_live(aws, release, "green", {"blue": "release00001", "green": "release0000b"})


def test_the_worker_and_templates_follow_the_swap(aws, name, lambda_env, tmp_path):
    """M4/M9: the live color's image and templates are what the stack derives the
    worker and the load balancer from; only LiveColor moves them, at the swap."""
    release = Release(aws, name)
    release.deploy(discover(tmp_path, name, "release00001"))
    second = discover(tmp_path, name, "release00002")
    release.deploy(second)
    params = release.parameters()
    live = params["LiveColor"].capitalize()
    assert (params[f"{live}ImageTag"], params[f"{live}TemplatePrefix"]) == (
        "release00001",
        "chatsvc/templates/releases/release00001/",
    )
    assert pipeline_swap(second, "job-2")["ok"] is True
    params = release.parameters()
    live = params["LiveColor"].capitalize()
    assert (params[f"{live}ImageTag"], params[f"{live}TemplatePrefix"]) == (
        "release00002",
        "chatsvc/templates/releases/release00002/",
    )
