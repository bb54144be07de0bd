"""The swap Lambda against moto's ELBv2; CodePipeline job results through Stubber."""

from __future__ import annotations

import io
import json
import zipfile

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from pipeline import swap_lambda
from pipeline.swap_lambda import SwapError, swap
from tests.pipeline import world
from tests.pipeline.faults import Killed, die, fail, inject, lose_write

pytestmark = pytest.mark.infra
IMAGES = {"blue": "blueimage001", "green": "greenimage01"}


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", world.REGION)
    monkeypatch.delenv("LOAD_BALANCER_NAME", raising=False)
    with mock_aws():
        yield world.clients()


@pytest.fixture
def w(aws):
    return world.build(aws, live="blue", images=IMAGES)


def live_color(aws, w) -> str:
    return world.color_of(w, world.forwards_to(aws["elbv2"], w.production_listener))


def test_color(aws, w) -> str:
    return world.color_of(w, world.forwards_to(aws["elbv2"], w.test_listener))


test_color.__test__ = False  # a helper, not a test


def assert_state(aws, w, live: str) -> None:
    """Production on `live`, test on the other, and the tags agree."""
    other = "green" if live == "blue" else "blue"
    assert live_color(aws, w) == live
    assert test_color(aws, w) == other
    assert world.tags_of(aws["elbv2"], w.tg[live])["live"] == "true"
    assert world.tags_of(aws["elbv2"], w.tg[other])["live"] == "false"
    for color in ("blue", "green"):
        assert world.tags_of(aws["elbv2"], w.tg[color])["color"] == color


def quiet(_line):
    pass


def run_swap(aws, w, **kwargs):
    return swap(aws["elbv2"], w.lb_name, log=quiet, sleep=lambda s: None, **kwargs)


# --------------------------------------------------------------------------- swap()


def test_swap_promotes_the_test_color_and_updates_tags(aws, w):
    assert_state(aws, w, "blue")
    result = run_swap(aws, w, job_id="job-1")
    assert (result.live_color, result.previous_color, result.changed) == ("green", "blue", True)
    assert_state(aws, w, "green")
    marker = world.tags_of(aws["elbv2"], w.lb_arn)
    assert marker["swap-job"] == "job-1" and marker["swap-target"] == "green"


def test_swap_twice_without_a_job_swaps_back(aws, w):
    run_swap(aws, w)
    run_swap(aws, w)
    assert_state(aws, w, "blue")


def test_refuses_when_the_test_group_has_no_healthy_targets(aws, w):
    world.set_healthy(aws["elbv2"], w.tg["green"], False)
    with pytest.raises(SwapError, match=r"refusing to swap: target group .*green.* no healthy"):
        run_swap(aws, w, job_id="job-1")
    assert_state(aws, w, "blue")
    assert "swap-job" not in world.tags_of(aws["elbv2"], w.lb_arn)


def test_rerun_of_the_same_job_does_not_swap_back(aws, w):
    run_swap(aws, w, job_id="job-1")
    result = run_swap(aws, w, job_id="job-1")
    assert result.changed is False
    assert_state(aws, w, "green")
    # a new job is a new swap
    run_swap(aws, w, job_id="job-2")
    assert_state(aws, w, "blue")


def test_to_color_is_idempotent(aws, w):
    assert run_swap(aws, w, to_color="blue").changed is False
    assert run_swap(aws, w, to_color="green").changed is True
    assert run_swap(aws, w, to_color="green").changed is False
    assert_state(aws, w, "green")


def test_failure_of_the_second_listener_update_is_undone(aws, w):
    inject(aws["elbv2"], "ModifyListener", {2}, fail("ModifyListener"))
    with pytest.raises(SwapError) as exc:
        run_swap(aws, w, job_id="job-1")
    message = str(exc.value)
    assert "swap failed while pointing test at" in message
    assert "ServiceUnavailable" in message
    assert "rolled back: production forwards to chatsvc-alb-blue (blue) again" in message
    assert_state(aws, w, "blue")


def test_a_lost_write_is_caught_by_the_read_back_and_undone(aws, w):
    inject(aws["elbv2"], "ModifyListener", {2}, lose_write)
    with pytest.raises(SwapError, match=r"did not read back as swapped.*rolled back"):
        run_swap(aws, w)
    assert_state(aws, w, "blue")


def test_failed_rollback_says_where_production_is_and_it_is_healthy(aws, w):
    inject(aws["elbv2"], "ModifyListener", {2, 3, 4}, fail("ModifyListener"))
    with pytest.raises(SwapError) as exc:
        run_swap(aws, w)
    message = str(exc.value)
    assert "ROLLBACK FAILED" in message
    assert "production now forwards to chatsvc-alb-green (green), 1 healthy" in message
    # production moved to the group whose health was checked before the swap
    prod = world.forwards_to(aws["elbv2"], w.production_listener)
    assert prod == w.tg["green"]
    assert swap_lambda.healthy_count(aws["elbv2"], prod) > 0


def test_crash_mid_swap_then_rerun_of_the_job_completes_it(aws, w):
    inject(aws["elbv2"], "ModifyListener", {2}, die)
    with pytest.raises(Killed):
        run_swap(aws, w, job_id="job-1")
    # half-done: both listeners on green, which was checked healthy
    assert live_color(aws, w) == "green" and test_color(aws, w) == "green"
    # discovery-style callers are refused; the same job converges to its target
    with pytest.raises(SwapError, match="earlier swap was interrupted"):
        run_swap(aws, w)
    result = run_swap(aws, w, job_id="job-1")
    assert result.changed is True
    assert_state(aws, w, "green")


def test_crash_mid_swap_then_operator_rolls_back_with_to_color(aws, w):
    inject(aws["elbv2"], "ModifyListener", {2}, die)
    with pytest.raises(Killed):
        run_swap(aws, w, job_id="job-1")
    run_swap(aws, w, to_color="blue")
    assert_state(aws, w, "blue")


def test_tag_failure_after_swap_is_reported_and_a_rerun_fixes_it(aws, w):
    counter = inject(aws["elbv2"], "AddTags", {2}, fail("AddTags"))  # 1: marker, 2: live=false
    with pytest.raises(SwapError, match=r"listeners swapped and verified .*rerun the swap"):
        run_swap(aws, w, job_id="job-1")
    assert live_color(aws, w) == "green"
    assert counter["calls"] == 2
    result = run_swap(aws, w, job_id="job-1")
    assert result.changed is False
    assert_state(aws, w, "green")


def test_missing_load_balancer(aws):
    with pytest.raises(SwapError, match="does not exist"):
        swap(aws["elbv2"], "nope", log=quiet)


def test_missing_color_tag_refuses(aws, w):
    aws["elbv2"].remove_tags(ResourceArns=[w.tg["green"]], TagKeys=["color"])
    with pytest.raises(SwapError, match="no valid 'color' tag"):
        run_swap(aws, w)
    assert live_color(aws, w) == "blue"


# --------------------------------------------------------------------------- handler()


def job_event(job_id="job-1", user_parameters=None):
    config = {"FunctionName": "chatsvc-swap"}
    if user_parameters is not None:
        config["UserParameters"] = user_parameters
    return {
        "CodePipeline.job": {
            "id": job_id,
            "accountId": "123456789012",
            "data": {"actionConfiguration": {"configuration": config}},
        }
    }


class Context:
    aws_request_id = "req-123"


@pytest.fixture
def codepipeline():
    client = boto3.client("codepipeline", region_name=world.REGION)
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def expect_success(stubber, job_id="job-1"):
    stubber.add_response("put_job_success_result", {}, {"jobId": job_id, "executionDetails": ANY})


def expect_failure(stubber, job_id="job-1", kind="JobFailed"):
    stubber.add_response(
        "put_job_failure_result",
        {},
        {
            "jobId": job_id,
            "failureDetails": {"type": kind, "message": ANY, "externalExecutionId": "req-123"},
        },
    )


def test_handler_swaps_and_reports_success(aws, w, codepipeline, monkeypatch):
    client, stubber = codepipeline
    monkeypatch.setenv("LOAD_BALANCER_NAME", w.lb_name)
    expect_success(stubber)
    result = swap_lambda.handler(job_event(), Context(), codepipeline=client)
    assert result["ok"] is True and result["live_color"] == "green"
    assert_state(aws, w, "green")


def test_handler_user_parameters_override_the_environment(aws, w, codepipeline, monkeypatch):
    client, stubber = codepipeline
    monkeypatch.setenv("LOAD_BALANCER_NAME", "some-other-alb")
    expect_success(stubber)
    event = job_event(user_parameters=json.dumps({"load_balancer": w.lb_name}))
    assert swap_lambda.handler(event, Context(), codepipeline=client)["ok"] is True
    assert_state(aws, w, "green")


def test_handler_reports_a_refusal_with_its_reason(aws, w, codepipeline, monkeypatch, capsys):
    client, stubber = codepipeline
    monkeypatch.setenv("LOAD_BALANCER_NAME", w.lb_name)
    world.set_healthy(aws["elbv2"], w.tg["green"], False)
    expect_failure(stubber)
    result = swap_lambda.handler(job_event(), Context(), codepipeline=client)
    assert result["ok"] is False
    assert "no healthy targets" in result["message"]
    assert "FAILED" in capsys.readouterr().out
    assert_state(aws, w, "blue")


def test_handler_reports_a_half_done_swap_undone(aws, w, codepipeline, monkeypatch):
    client, stubber = codepipeline
    monkeypatch.setenv("LOAD_BALANCER_NAME", w.lb_name)
    elbv2 = aws["elbv2"]
    inject(elbv2, "ModifyListener", {2}, fail("ModifyListener"))
    expect_failure(stubber)
    result = swap_lambda.handler(job_event(), Context(), elbv2=elbv2, codepipeline=client)
    assert "rolled back" in result["message"]
    assert_state(aws, w, "blue")


@pytest.mark.parametrize(
    ("user_parameters", "expected"),
    [(None, "no load balancer"), ("{not json", "invalid UserParameters"), ("[1]", "JSON object")],
)
def test_handler_configuration_errors(aws, codepipeline, user_parameters, expected):
    client, stubber = codepipeline
    expect_failure(stubber, kind="ConfigurationError")
    result = swap_lambda.handler(
        job_event(user_parameters=user_parameters), Context(), codepipeline=client
    )
    assert result["ok"] is False and expected in result["message"]


def test_handler_reports_a_missing_load_balancer(aws, codepipeline, monkeypatch):
    client, stubber = codepipeline
    monkeypatch.setenv("LOAD_BALANCER_NAME", "absent")
    expect_failure(stubber)
    result = swap_lambda.handler(job_event(), Context(), codepipeline=client)
    assert "does not exist" in result["message"]


def test_handler_reports_unexpected_errors(aws, w, codepipeline, monkeypatch):
    client, stubber = codepipeline
    monkeypatch.setenv("LOAD_BALANCER_NAME", w.lb_name)

    def boom(params):
        raise RuntimeError("kaboom")

    elbv2 = aws["elbv2"]
    inject(elbv2, "DescribeLoadBalancers", None, boom)
    expect_failure(stubber)
    result = swap_lambda.handler(job_event(), Context(), elbv2=elbv2, codepipeline=client)
    assert "unexpected error: RuntimeError: kaboom" in result["message"]


def test_lambda_retry_after_lost_success_report_does_not_swap_back(aws, w, monkeypatch):
    """CodePipeline never heard of the first run; Lambda's retry must converge, not swap."""
    monkeypatch.setenv("LOAD_BALANCER_NAME", w.lb_name)
    client = boto3.client("codepipeline", region_name=world.REGION)
    with Stubber(client) as stubber:
        stubber.add_client_error("put_job_success_result", "ThrottlingException")
        expect_success(stubber)
        with pytest.raises(Exception, match="ThrottlingException"):
            swap_lambda.handler(job_event(), Context(), codepipeline=client)
        assert_state(aws, w, "green")
        result = swap_lambda.handler(job_event(), Context(), codepipeline=client)
        assert result["ok"] is True
        stubber.assert_no_pending_responses()
    assert_state(aws, w, "green")


def test_direct_invocation_without_a_job(aws, w):
    result = swap_lambda.handler({"load_balancer": w.lb_name, "to_color": "green"}, None)
    assert result["ok"] is True
    assert_state(aws, w, "green")


# --------------------------------------------------------------------------- CLI


def test_cli_status_swap_and_rollback(aws, w, capsys):
    assert swap_lambda.main(["--load-balancer", w.lb_name, "--status"]) == 0
    assert "production :80 -> chatsvc-alb-blue (blue) image=blueimage001" in capsys.readouterr().out
    assert swap_lambda.main(["--load-balancer", w.lb_name]) == 0
    assert "OK: green is live" in capsys.readouterr().out
    assert swap_lambda.main(["--load-balancer", w.lb_name, "--to-color", "blue"]) == 0
    assert_state(aws, w, "blue")


def test_cli_refusal_exits_1(aws, w, capsys):
    world.set_healthy(aws["elbv2"], w.tg["green"], False)
    assert swap_lambda.main(["--load-balancer", w.lb_name]) == 1
    assert "FAILED: refusing to swap" in capsys.readouterr().err


# ------------------------------------------------- the run's deployment.json (input artifact)


def artifact_job(aws_clients, job_id: str, deployment: dict) -> dict:
    """A job whose input artifact (DiscoverOutput) holds `deployment`, zipped like CodePipeline."""
    s3 = boto3.client("s3", region_name=world.REGION)
    bucket = "pipeline-artifacts"
    s3.create_bucket(Bucket=bucket)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("deployment.json", json.dumps(deployment))
    key = f"chatsvc/DiscoverOu/{job_id}.zip"
    s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())
    event = job_event(job_id)
    event["CodePipeline.job"]["data"].update(
        inputArtifacts=[
            {
                "name": "DiscoverOutput",
                "location": {"type": "S3", "s3Location": {"bucketName": bucket, "objectKey": key}},
            }
        ],
        artifactCredentials={
            "accessKeyId": "testing",
            "secretAccessKey": "testing",
            "sessionToken": "testing",
        },
    )
    return event


RUN = {"LiveColor": "blue", "TestColor": "green", "TestImageTag": IMAGES["green"]}


def test_a_pipeline_retry_after_a_successful_swap_does_not_swap_back(
    aws, w, codepipeline, monkeypatch
):
    """A CodePipeline retry has a new job id: it must converge on the run's TestColor."""
    client, stubber = codepipeline
    monkeypatch.setenv("LOAD_BALANCER_NAME", w.lb_name)
    expect_success(stubber, "job-1")
    assert swap_lambda.handler(artifact_job(aws, "job-1", RUN), Context(), codepipeline=client)[
        "ok"
    ]
    assert_state(aws, w, "green")

    expect_success(stubber, "job-2")
    retried = swap_lambda.handler(artifact_job(aws, "job-2", RUN), Context(), codepipeline=client)
    assert retried["ok"] and "already live" in retried["message"]
    assert_state(aws, w, "green")  # not swapped back to the release before


def test_a_swap_whose_test_color_another_run_replaced_is_refused(aws, w, codepipeline, monkeypatch):
    client, stubber = codepipeline
    monkeypatch.setenv("LOAD_BALANCER_NAME", w.lb_name)
    expect_failure(stubber, "job-1")
    older_run = {**RUN, "TestImageTag": "olderimage01"}  # green now runs another run's image
    result = swap_lambda.handler(
        artifact_job(aws, "job-1", older_run), Context(), codepipeline=client
    )
    assert not result["ok"] and "not this run's 'olderimage01'" in result["message"]
    assert live_color(aws, w) == "blue"


def test_an_unreadable_deployment_artifact_fails_the_job(aws, w, codepipeline, monkeypatch):
    client, stubber = codepipeline
    monkeypatch.setenv("LOAD_BALANCER_NAME", w.lb_name)
    expect_failure(stubber, "job-1")
    broken = artifact_job(aws, "job-1", {"TestColor": "purple"})
    result = swap_lambda.handler(broken, Context(), codepipeline=client)
    assert not result["ok"] and "deployment.json" in result["message"]
    assert live_color(aws, w) == "blue"


def test_the_released_image_is_marked_so_the_lifecycle_never_expires_it(
    aws, w, codepipeline, monkeypatch
):
    client, stubber = codepipeline
    monkeypatch.setenv("LOAD_BALANCER_NAME", w.lb_name)
    monkeypatch.setenv("REPOSITORY_NAME", "chatsvc")
    ecr = boto3.client("ecr", region_name=world.REGION)
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
    for job_id in ("job-1", "job-2"):  # a retry finds the mark there already
        expect_success(stubber, job_id)
        assert swap_lambda.handler(artifact_job(aws, job_id, RUN), Context(), codepipeline=client)[
            "ok"
        ]
    [image] = ecr.describe_images(repositoryName="chatsvc")["imageDetails"]
    assert sorted(image["imageTags"]) == [IMAGES["green"], f"promoted-{IMAGES['green']}"]
