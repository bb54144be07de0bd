"""The swap Lambda against moto: the release stack's traffic half is created and
updated for real by moto's CloudFormation (cloudformation/load-balancer.yaml), the
ECS services and target health by moto's ECS and ELBv2; CodePipeline's job results
through Stubber. States moto cannot reach (an update in progress, rolled back) come
from Stubber responses on a real CloudFormation client."""

from __future__ import annotations

import datetime
import io
import json
import time
import zipfile
from dataclasses import replace

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from pipeline import swap_lambda
from pipeline.swap_lambda import Swap, SwapError
from tests.pipeline import world

pytestmark = pytest.mark.infra
IMAGES = {"blue": "blueimage001", "green": "greenimage01"}


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", world.REGION)
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "1")
    for name in ("LOAD_BALANCER_NAME", "RELEASE_STACK_NAME", "CLUSTER_NAME", "SERVICE_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    world.patch_moto_cloudformation(monkeypatch)
    with mock_aws():
        yield world.clients()


@pytest.fixture
def w(aws):
    return world.build_release(aws, name="chatsvc-alb", live="blue", images=IMAGES)


@pytest.fixture
def lambda_env(w, monkeypatch):
    config = world.release_config(w)
    monkeypatch.setenv("LOAD_BALANCER_NAME", config.load_balancer)
    monkeypatch.setenv("RELEASE_STACK_NAME", config.stack)
    monkeypatch.setenv("CLUSTER_NAME", config.cluster)
    monkeypatch.setenv("SERVICE_PREFIX", config.service_prefix)
    return config


def quiet(_line):
    pass


def new_swap(aws, w, target: str, **kwargs) -> Swap:
    return Swap(
        world.release_config(w),
        aws["cloudformation"],
        aws["ecs"],
        aws["elbv2"],
        target,
        log=quiet,
        **kwargs,
    )


def live_color(aws, w) -> str:
    return world.color_of(w, world.forwards_to(aws["elbv2"], w.production_listener))


def stack(aws, w) -> dict:
    return aws["cloudformation"].describe_stacks(StackName=f"{w.lb_name}-release")["Stacks"][0]


def stack_parameters(aws, w) -> dict[str, str]:
    return {p["ParameterKey"]: p["ParameterValue"] for p in stack(aws, w)["Parameters"]}


def assert_live(aws, w, live: str) -> None:
    """Production on `live`, test on the other; the tags and the stack's record agree."""
    other = "green" if live == "blue" else "blue"
    elbv2 = aws["elbv2"]
    assert live_color(aws, w) == live
    assert world.color_of(w, world.forwards_to(elbv2, w.test_listener)) == other
    assert world.tags_of(elbv2, w.tg[live])["live"] == "true"
    assert world.tags_of(elbv2, w.tg[other])["live"] == "false"
    assert stack_parameters(aws, w)["LiveColor"] == live


def deploy(aws, w, **changes) -> None:
    """What the Deploy action (or CloudFormation rolling one back) does: re-apply the
    stack's template with its recorded parameters, some of them changed."""
    aws["cloudformation"].update_stack(
        StackName=f"{w.lb_name}-release",
        UsePreviousTemplate=True,
        Parameters=[
            {"ParameterKey": key, "ParameterValue": changes[key]}
            if key in changes
            else {"ParameterKey": key, "UsePreviousValue": True}
            for key in stack_parameters(aws, w)
        ],
    )


# --------------------------------------------------------------------------- the swap


def test_swap_flips_live_color_in_the_release_stack_and_nothing_else(aws, w):
    assert_live(aws, w, "blue")
    before = stack_parameters(aws, w)
    step = new_swap(aws, w, "green").run(sleep=lambda s: None)
    assert step.done and step.changed and step.message == "green is live"
    assert_live(aws, w, "green")
    after = stack_parameters(aws, w)
    assert {k: v for k, v in after.items() if before[k] != v} == {"LiveColor": "green"}


def test_a_later_deploy_or_rollback_keeps_production_where_the_swap_put_it(aws, w):
    """M1: CloudFormation owns the listeners, so re-applying the stack (the next
    release's deploy, or its rollback) never points production back at the old one."""
    new_swap(aws, w, "green").run(sleep=lambda s: None)
    deploy(aws, w, BlueImageTag="nextrelease1")  # the next run deploys to blue (test)
    assert_live(aws, w, "green")
    assert world.tags_of(aws["elbv2"], w.tg["blue"])["image"] == "nextrelease1"


def test_a_swap_to_the_live_color_changes_nothing(aws, w):
    updated = stack(aws, w).get("LastUpdatedTime")
    step = new_swap(aws, w, "blue").advance()
    assert step.done and not step.changed and "already live" in step.message
    assert stack(aws, w).get("LastUpdatedTime") == updated
    assert_live(aws, w, "blue")


def test_refuses_a_color_that_runs_another_runs_image(aws, w):
    with pytest.raises(SwapError, match="not this run's 'olderimage01'"):
        new_swap(aws, w, "green", expect_image="olderimage01").advance()
    assert_live(aws, w, "blue")


def test_capacity_is_matched_before_the_swap(aws, w):
    """M11: the live color grew to 3 tasks; green (at 1) is scaled to 3 and the swap
    waits until all 3 are healthy before it touches the stack."""
    ecs, elbv2 = aws["ecs"], aws["elbv2"]
    ecs.update_service(cluster=w.cluster, service=f"{world.PREFIX}-blue", desiredCount=3)
    swap = new_swap(aws, w, "green")
    step = swap.advance()
    assert not step.done and "starting 2 task(s)" in step.message
    green = ecs.describe_services(cluster=w.cluster, services=[f"{world.PREFIX}-green"])
    assert green["services"][0]["desiredCount"] == 3
    step = swap.advance(step.token)
    assert not step.done and "1 healthy of 3 wanted" in step.message
    assert_live(aws, w, "blue")  # nothing swapped while waiting
    world.register_healthy(elbv2, w.tg["green"], 3)
    step = swap.advance(step.token)
    assert step.token == {"phase": "stack", "previous": "blue"}
    step = swap.advance(step.token)
    assert step.done and step.changed
    assert_live(aws, w, "green")


def test_refuses_after_waiting_too_long_for_capacity(aws, w):
    world.set_healthy(aws["elbv2"], w.tg["green"], False)
    now = [1000.0]
    swap = new_swap(aws, w, "green", clock=lambda: now[0])
    step = swap.advance()
    assert "0 healthy of 1 wanted" in step.message
    now[0] += swap_lambda.CAPACITY_WAIT_SECONDS + 1
    with pytest.raises(SwapError, match=r"refusing to swap: .* after 15 min; production stays"):
        swap.advance(step.token)
    assert_live(aws, w, "blue")


def test_listeners_changed_by_hand_are_reported_not_trusted(aws, w):
    aws["elbv2"].modify_listener(
        ListenerArn=w.production_listener,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": w.tg["green"]}],
    )
    with pytest.raises(SwapError, match="outside CloudFormation"):
        new_swap(aws, w, "blue").advance()


# --------------------------------------------------------------------------- the bake


def live_alarm(aws, name: str, state: str = "OK") -> None:
    cloudwatch = aws["cloudwatch"]
    cloudwatch.put_metric_alarm(
        AlarmName=name,
        MetricName="HTTPCode_Target_5XX_Count",
        Namespace="AWS/ApplicationELB",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=5,
        ComparisonOperator="GreaterThanThreshold",
    )
    cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason="test")


def baking_swap(aws, w, now):
    config = replace(world.release_config(w), alarm_prefix="chatsvc-live-", bake_seconds=300)
    return Swap(
        config,
        aws["cloudformation"],
        aws["ecs"],
        aws["elbv2"],
        "green",
        cloudwatch=aws["cloudwatch"],
        log=quiet,
        clock=lambda: now[0],
    )


def advance_until_baking(swap):
    step = swap.advance()
    while step.token.get("phase") != "bake":
        assert not step.done
        step = swap.advance(step.token)
    return step


def test_a_quiet_bake_ends_the_swap(aws, w):
    live_alarm(aws, "chatsvc-live-target-5xx")
    live_alarm(aws, "chatsvc-test-target-5xx", "ALARM")  # the test color's never count
    now = [1000.0]
    swap = baking_swap(aws, w, now)
    step = advance_until_baking(swap)
    assert "baking 300 s" in step.message
    assert_live(aws, w, "green")
    now[0] += 200
    step = swap.advance(step.token)
    assert not step.done and "100 s left" in step.message
    now[0] += 101
    step = swap.advance(step.token)
    assert step.done and step.message == "green is live (baked 300 s, no alarm)"
    assert_live(aws, w, "green")


def test_an_alarm_during_the_bake_swaps_back_and_fails(aws, w):
    """The release went live, then its 5xx alarm fired: production returns to the
    release before, through the same stack, and the job fails saying why."""
    live_alarm(aws, "chatsvc-live-target-5xx")
    now = [1000.0]
    swap = baking_swap(aws, w, now)
    step = advance_until_baking(swap)
    aws["cloudwatch"].set_alarm_state(
        AlarmName="chatsvc-live-target-5xx", StateValue="ALARM", StateReason="5xx"
    )
    now[0] += 60
    step = swap.advance(step.token)
    assert step.token["phase"] == "rollback" and "rolling back to blue" in step.message
    with pytest.raises(
        SwapError, match=r"rolled back: chatsvc-live-target-5xx fired .* blue is live again"
    ):
        swap.advance(step.token)
    assert_live(aws, w, "blue")


def test_an_alarm_left_over_from_the_previous_color_waits_for_its_next_evaluation(aws, w):
    """The swap retargets the live alarms in place: one still in ALARM about blue must
    not roll green back before it was evaluated again, unless it stays in ALARM."""
    live_alarm(aws, "chatsvc-live-target-5xx", "ALARM")  # about blue, before the swap
    now = [time.time() + 1]
    swap = baking_swap(aws, w, now)
    step = advance_until_baking(swap)
    now[0] += swap_lambda.ALARM_GRACE_SECONDS - 10
    step = swap.advance(step.token)
    assert step.token["phase"] == "bake" and "no alarm" in step.message
    now[0] += 10  # evaluated again since, and still in ALARM: it is green's now
    step = swap.advance(step.token)
    assert step.token["phase"] == "rollback"


def test_bake_needs_an_alarm_prefix(monkeypatch):
    for name, value in (
        ("LOAD_BALANCER_NAME", "a"),
        ("RELEASE_STACK_NAME", "b"),
        ("CLUSTER_NAME", "c"),
        ("SERVICE_PREFIX", "d"),
        ("BAKE_SECONDS", "300"),
    ):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("ALARM_PREFIX", raising=False)
    with pytest.raises(ValueError, match="needs ALARM_PREFIX"):
        swap_lambda.Config.from_env()
    monkeypatch.setenv("ALARM_PREFIX", "chatsvc-live-")
    assert swap_lambda.Config.from_env().bake_seconds == 300


# ------------------------------------------------- stack states moto cannot reach (Stubber)


def described(status: str, live: str, reason: str = "") -> dict:
    params = world.release_parameters(live, IMAGES)
    return {
        "Stacks": [
            {
                "StackName": "chatsvc-alb-release",
                "StackStatus": status,
                "StackStatusReason": reason,
                "CreationTime": datetime.datetime(2026, 1, 1),
                "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in params.items()],
            }
        ]
    }


@pytest.fixture
def stubbed(aws, w):
    cfn = boto3.client("cloudformation", region_name=world.REGION)
    with Stubber(cfn) as stubber:
        yield (
            Swap(world.release_config(w), cfn, aws["ecs"], aws["elbv2"], "green", log=quiet),
            stubber,
        )
        stubber.assert_no_pending_responses()


def test_refuses_while_another_update_runs(stubbed):
    swap, stubber = stubbed
    stubber.add_response("describe_stacks", described("UPDATE_IN_PROGRESS", "blue"))
    with pytest.raises(SwapError, match="UPDATE_IN_PROGRESS, not stable: refusing"):
        swap.advance()


def test_a_rerun_after_the_update_began_waits_for_it(stubbed):
    swap, stubber = stubbed
    stubber.add_response("describe_stacks", described("UPDATE_IN_PROGRESS", "green"))
    step = swap.advance()
    assert not step.done and step.token == {"phase": "stack", "previous": "blue"}


def test_a_rolled_back_swap_fails_with_the_first_reason(stubbed, aws, w):
    swap, stubber = stubbed
    stubber.add_response("describe_stacks", described("UPDATE_ROLLBACK_COMPLETE", "blue"))
    events = [
        ("chatsvc-alb-release", "UPDATE_ROLLBACK_COMPLETE", ""),
        ("ProductionListener", "UPDATE_FAILED", "Resource update cancelled"),
        ("TestListener", "UPDATE_FAILED", "Access denied: elasticloadbalancing:ModifyListener"),
        ("chatsvc-alb-release", "UPDATE_IN_PROGRESS", "User Initiated"),
        ("Older", "UPDATE_FAILED", "from an earlier update"),
    ]
    stubber.add_response(
        "describe_stack_events",
        {
            "StackEvents": [
                {
                    "StackId": "id",
                    "EventId": str(n),
                    "StackName": "chatsvc-alb-release",
                    "LogicalResourceId": logical,
                    "ResourceStatus": status,
                    "ResourceStatusReason": reason,
                    "Timestamp": datetime.datetime(2026, 1, 1),
                }
                for n, (logical, status, reason) in enumerate(events)
            ]
        },
    )
    with pytest.raises(SwapError) as failure:
        swap.advance({"phase": "stack"})
    message = str(failure.value)
    assert "UPDATE_ROLLBACK_COMPLETE (TestListener: Access denied" in message
    assert "production stays on blue" in message
    assert_live(aws, w, "blue")


# --------------------------------------------------------------------------- handler()


class Context:
    aws_request_id = "req-123"


@pytest.fixture
def codepipeline():
    client = boto3.client("codepipeline", region_name=world.REGION)
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def expect_success(stubber, job_id="job-1", token=None):
    expected = {"jobId": job_id, "executionDetails": ANY}
    if token is not None:
        expected["continuationToken"] = token
    stubber.add_response("put_job_success_result", {}, expected)


def expect_failure(stubber, job_id="job-1", kind="JobFailed"):
    stubber.add_response(
        "put_job_failure_result",
        {},
        {
            "jobId": job_id,
            "failureDetails": {"type": kind, "message": ANY, "externalExecutionId": "req-123"},
        },
    )


RUN = {"LiveColor": "blue", "TestColor": "green", "TestImageTag": IMAGES["green"]}


def artifact_job(job_id: str, deployment: dict, token: dict | None = None) -> dict:
    """A job whose input artifact (DiscoverOutput) holds `deployment`, zipped like CodePipeline."""
    s3 = boto3.client("s3", region_name=world.REGION)
    bucket = "pipeline-artifacts"
    s3.create_bucket(Bucket=bucket)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("deployment.json", json.dumps(deployment))
    key = f"chatsvc/DiscoverOu/{job_id}.zip"
    s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
    data = {
        "actionConfiguration": {"configuration": {"FunctionName": "chatsvc-swap"}},
        "inputArtifacts": [
            {
                "name": "DiscoverOutput",
                "location": {"type": "S3", "s3Location": {"bucketName": bucket, "objectKey": key}},
            }
        ],
        "artifactCredentials": {
            "accessKeyId": "testing",
            "secretAccessKey": "testing",
            "sessionToken": "testing",
        },
    }
    if token is not None:
        data["continuationToken"] = json.dumps(token)
    return {"CodePipeline.job": {"id": job_id, "accountId": "123456789012", "data": data}}


def invoke(event, codepipeline):
    return swap_lambda.handler(event, Context(), codepipeline=codepipeline[0])


def test_handler_swaps_and_reports_success(aws, w, lambda_env, codepipeline):
    # No remaining-time budget in the test context: each invocation does one pass.
    token = {"phase": "stack", "previous": "blue"}
    expect_success(codepipeline[1], token=json.dumps(token))
    first = invoke(artifact_job("job-1", RUN), codepipeline)
    assert first["pending"] and first["token"] == token
    expect_success(codepipeline[1])
    done = invoke(artifact_job("job-1", RUN, token), codepipeline)
    assert done == {"ok": True, "message": "green is live", "live_color": "green"}
    assert_live(aws, w, "green")


def test_handler_polls_within_one_invocation_while_time_remains(aws, w, lambda_env, codepipeline):
    class Plenty(Context):
        def get_remaining_time_in_millis(self):
            return 300_000

    expect_success(codepipeline[1])
    result = swap_lambda.handler(
        artifact_job("job-1", RUN), Plenty(), codepipeline=codepipeline[0], sleep=lambda s: None
    )
    assert result["ok"] and result["live_color"] == "green"
    assert_live(aws, w, "green")


def test_a_pipeline_retry_after_a_successful_swap_does_not_swap_back(
    aws, w, lambda_env, codepipeline
):
    """A CodePipeline retry has a new job id and no token: it finds TestColor live."""
    new_swap(aws, w, "green").run(sleep=lambda s: None)
    expect_success(codepipeline[1], "job-2")
    retried = invoke(artifact_job("job-2", RUN), codepipeline)
    assert retried["ok"] and "already live" in retried["message"]
    assert_live(aws, w, "green")


def test_handler_reports_a_refusal_with_its_reason(aws, w, lambda_env, codepipeline):
    expect_failure(codepipeline[1])
    result = invoke(artifact_job("job-1", {**RUN, "TestImageTag": "olderimage01"}), codepipeline)
    assert not result["ok"] and "not this run's 'olderimage01'" in result["message"]
    assert_live(aws, w, "blue")


def test_an_unreadable_deployment_artifact_fails_the_job(aws, w, lambda_env, codepipeline):
    expect_failure(codepipeline[1])
    result = invoke(artifact_job("job-1", {"TestColor": "purple"}), codepipeline)
    assert not result["ok"] and "deployment.json" in result["message"]
    assert_live(aws, w, "blue")


def test_handler_configuration_errors(aws, codepipeline):
    expect_failure(codepipeline[1], kind="ConfigurationError")
    result = invoke(artifact_job("job-1", RUN), codepipeline)
    assert not result["ok"] and "missing configuration: load_balancer, stack" in result["message"]


def test_handler_reports_unexpected_errors(aws, w, lambda_env, codepipeline, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(swap_lambda, "read_release", explode)
    expect_failure(codepipeline[1])
    result = invoke(artifact_job("job-1", RUN), codepipeline)
    assert result == {"ok": False, "message": "unexpected error: RuntimeError: boom"}


def test_the_released_image_is_marked_so_the_lifecycle_never_expires_it(
    aws, w, lambda_env, codepipeline, monkeypatch
):
    monkeypatch.setenv("REPOSITORY_NAME", "chatsvc")
    ecr = aws["ecr"]
    ecr.create_repository(repositoryName="chatsvc", imageTagMutability="IMMUTABLE")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"digest": "sha256:" + "c" * 64, "size": 1, "mediaType": "x"},
        "layers": [],
    }
    ecr.put_image(
        repositoryName="chatsvc", imageManifest=json.dumps(manifest), imageTag=IMAGES["green"]
    )
    new_swap(aws, w, "green").run(sleep=lambda s: None)
    for job_id in ("job-1", "job-2"):  # a retry finds the mark there already
        expect_success(codepipeline[1], job_id)
        assert invoke(artifact_job(job_id, RUN), codepipeline)["ok"]
    [image] = ecr.describe_images(repositoryName="chatsvc")["imageDetails"]
    assert sorted(image["imageTags"]) == [IMAGES["green"], f"promoted-{IMAGES['green']}"]


def test_direct_invocation_takes_one_step(aws, w, lambda_env):
    step = swap_lambda.handler({"to_color": "green"}, Context(), clients=aws)
    assert (
        step["ok"] and not step["done"] and step["token"] == {"phase": "stack", "previous": "blue"}
    )
    done = swap_lambda.handler(
        {"to_color": "green", "token": step["token"]}, Context(), clients=aws
    )
    assert done["ok"] and done["done"]
    assert_live(aws, w, "green")
    assert not swap_lambda.handler({"to_color": "purple"}, Context(), clients=aws)["ok"]


# --------------------------------------------------------------------------- CLI


def test_cli_status_and_rollback(aws, w, capsys, monkeypatch):
    config = world.release_config(w)
    monkeypatch.setattr(
        swap_lambda.Config, "from_prefix", classmethod(lambda cls, prefix, role="": config)
    )
    monkeypatch.setattr(swap_lambda, "POLL_SECONDS", 0)
    assert swap_lambda.main(["--prefix", "chatsvc-alb", "--status"]) == 0
    assert "LiveColor=blue" in capsys.readouterr().out
    assert swap_lambda.main(["--prefix", "chatsvc-alb", "--to-color", "green"]) == 0
    assert "OK: green is live" in capsys.readouterr().out
    assert swap_lambda.main(["--prefix", "chatsvc-alb", "--to-color", "blue"]) == 0
    assert_live(aws, w, "blue")


def test_cli_refusal_exits_1(aws, w, capsys, monkeypatch):
    config = world.release_config(w)
    monkeypatch.setattr(
        swap_lambda.Config, "from_prefix", classmethod(lambda cls, prefix, role="": config)
    )
    world.set_healthy(aws["elbv2"], w.tg["green"], False)
    monkeypatch.setattr(swap_lambda, "CAPACITY_WAIT_SECONDS", -1)
    assert swap_lambda.main(["--prefix", "chatsvc-alb", "--to-color", "green"]) == 1
    assert "FAILED: refusing to swap" in capsys.readouterr().err
    assert_live(aws, w, "blue")


def test_config_names_follow_the_platform_prefix():
    config = swap_lambda.Config.from_prefix("chatsvc-production")
    assert config == swap_lambda.Config(
        "chatsvc-production",
        "chatsvc-production-release",
        "chatsvc-production",
        "chatsvc-production-web",
    )
    assert config.service("blue") == "chatsvc-production-web-blue"
