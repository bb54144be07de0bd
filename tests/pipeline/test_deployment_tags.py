"""deployment_tags against moto's ELBv2: which color is live, and deployment.json."""

from __future__ import annotations

import json

import pytest
from moto import mock_aws

from pipeline import deployment_tags, swap_lambda
from tests.pipeline import world

pytestmark = pytest.mark.infra

KEYS = set(deployment_tags.KEYS)
NEW = "chatsvc/templates/releases/run-2/"
OLD = "chatsvc/templates/releases/run-1/"


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", world.REGION)
    with mock_aws():
        yield world.clients()


def discover(tmp_path, capsys, *args, name="chatsvc-alb", tag="newtag000001"):
    out = tmp_path / "out" / "deployment.json"
    code = deployment_tags.main(
        ["--load-balancer", name, f"--image-tag={tag}", "--out", str(out), *args]
        + ([] if any(a.startswith("--template") for a in args) else ["--template-prefix", NEW])
    )
    text = capsys.readouterr()
    data = json.loads(out.read_text()) if out.exists() else None
    return code, data, text.out + text.err


def test_first_deployment_without_a_load_balancer(aws, tmp_path, capsys):
    code, data, out = discover(tmp_path, capsys)
    assert code == 0, out
    assert data == {
        "LiveColor": "blue",
        "TestColor": "green",
        "LiveImageTag": "newtag000001",
        "TestImageTag": "newtag000001",
        "BlueImageTag": "newtag000001",
        "GreenImageTag": "newtag000001",
        "BlueTemplatePrefix": NEW,
        "GreenTemplatePrefix": NEW,
        "LiveTargetGroupArn": "",
        "TestTargetGroupArn": "",
        "FirstDeployment": "true",
    }
    assert "does not exist yet: first deployment" in out


def test_first_deployment_when_target_groups_carry_no_image_yet(aws, tmp_path, capsys):
    w = world.build(aws, images=None)
    code, data, out = discover(tmp_path, capsys)
    assert code == 0, out
    assert data["FirstDeployment"] == "true"
    assert (data["LiveColor"], data["TestColor"]) == ("blue", "green")
    assert data["BlueImageTag"] == data["GreenImageTag"] == "newtag000001"
    assert data["LiveTargetGroupArn"] == w.tg["blue"]
    assert data["TestTargetGroupArn"] == w.tg["green"]


@pytest.mark.parametrize("live", ["blue", "green"])
def test_reads_the_live_color_from_the_production_listener(aws, tmp_path, capsys, live):
    test = "green" if live == "blue" else "blue"
    w = world.build(aws, live=live, images={live: "liveimage001", test: "oldtest00001"})
    code, data, out = discover(tmp_path, capsys)
    assert code == 0, out
    assert set(data) == KEYS
    assert all(isinstance(v, str) for v in data.values())
    assert data["LiveColor"] == live
    assert data["TestColor"] == test
    assert data["LiveImageTag"] == "liveimage001"
    assert data["TestImageTag"] == "newtag000001"
    assert data[f"{live.capitalize()}ImageTag"] == "liveimage001"  # live keeps its image
    assert data[f"{test.capitalize()}ImageTag"] == "newtag000001"  # test gets the new one
    assert data["LiveTargetGroupArn"] == w.tg[live]
    assert data["TestTargetGroupArn"] == w.tg[test]
    assert data["FirstDeployment"] == "false"


def test_listeners_win_over_disagreeing_live_tags(aws, tmp_path, capsys):
    w = world.build(aws, live="blue", images={"blue": "aaaa", "green": "bbbb"})
    aws["elbv2"].add_tags(ResourceArns=[w.tg["blue"]], Tags=[{"Key": "live", "Value": "false"}])
    aws["elbv2"].add_tags(ResourceArns=[w.tg["green"]], Tags=[{"Key": "live", "Value": "true"}])
    code, data, out = discover(tmp_path, capsys)
    assert code == 0
    assert data["LiveColor"] == "blue"
    assert "live tags disagree with the listeners" in out


def test_https_listener_is_production_when_present(aws, tmp_path, capsys):
    # 443 forwards to green; 80 only redirects; 8080 (test) forwards to blue.
    w = world.build(aws, live="blue", images={"blue": "aaaa", "green": "bbbb"})
    elbv2 = aws["elbv2"]
    elbv2.modify_listener(
        ListenerArn=w.production_listener,
        DefaultActions=[
            {
                "Type": "redirect",
                "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"},
            }
        ],
    )
    elbv2.create_listener(
        LoadBalancerArn=w.lb_arn,
        Protocol="HTTP",  # moto needs no certificate for this; the port is what counts
        Port=443,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": w.tg["green"]}],
    )
    elbv2.modify_listener(
        ListenerArn=w.test_listener,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": w.tg["blue"]}],
    )
    code, data, out = discover(tmp_path, capsys)
    assert code == 0, out
    assert (data["LiveColor"], data["TestColor"]) == ("green", "blue")
    assert data["LiveImageTag"] == "bbbb"


def test_listeners_edited_by_hand_stop_the_release(aws, tmp_path, capsys):
    w = world.build(aws, live="blue", images={"blue": "aaaa", "green": "bbbb"})
    aws["elbv2"].modify_listener(
        ListenerArn=w.production_listener,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": w.tg["green"]}],
    )
    code, data, out = discover(tmp_path, capsys)
    assert code == 1
    assert data is None
    assert "changed outside CloudFormation" in out and "Listeners changed by hand" in out


@pytest.mark.parametrize("live", ["blue", "green"])
def test_only_the_test_color_takes_this_runs_templates(aws, tmp_path, capsys, live):
    """M9: a template change reaches the live color only with the swap (LiveColor)."""
    test = "green" if live == "blue" else "blue"
    world.build(
        aws, live=live, images={"blue": "aaaa", "green": "bbbb"}, templates={live: OLD, test: OLD}
    )
    code, data, out = discover(tmp_path, capsys)
    assert code == 0, out
    assert data[f"{live.capitalize()}TemplatePrefix"] == OLD
    assert data[f"{test.capitalize()}TemplatePrefix"] == NEW


def test_a_live_color_without_a_templates_tag_takes_this_runs_once(aws, tmp_path, capsys):
    world.build(aws, live="blue", images={"blue": "aaaa", "green": "bbbb"})
    code, data, out = discover(tmp_path, capsys)
    assert code == 0, out
    assert data["BlueTemplatePrefix"] == data["GreenTemplatePrefix"] == NEW
    assert "carries no templates tag: both colors take this run's templates" in out


def test_reads_the_prefix_from_templates_json(aws, tmp_path, capsys):
    world.build(aws, images={"blue": "aaaa", "green": "bbbb"})
    templates = tmp_path / "templates.json"
    templates.write_text(json.dumps({"TemplatePrefix": NEW}))
    code, data, out = discover(tmp_path, capsys, "--templates-json", str(templates))
    assert code == 0, out
    assert data["GreenTemplatePrefix"] == NEW


@pytest.mark.parametrize("prefix", ["", "no-trailing-slash", "a b/", "x" * 300 + "/"])
def test_rejects_an_invalid_template_prefix(aws, tmp_path, capsys, prefix):
    code, data, out = discover(tmp_path, capsys, f"--template-prefix={prefix}")
    assert code == 2 and data is None
    assert "template prefix" in out


def test_missing_color_tag_stops_the_release(aws, tmp_path, capsys):
    w = world.build(aws, images={"blue": "aaaa", "green": "bbbb"})
    aws["elbv2"].remove_tags(ResourceArns=[w.tg["green"]], TagKeys=["color"])
    code, _data, out = discover(tmp_path, capsys)
    assert code == 1
    assert "no valid 'color' tag" in out


def test_missing_test_listener_stops_the_release(aws, tmp_path, capsys):
    w = world.build(aws, images={"blue": "aaaa", "green": "bbbb"})
    aws["elbv2"].delete_listener(ListenerArn=w.test_listener)
    code, _, out = discover(tmp_path, capsys)
    assert code == 1
    assert "no test listener on port 8080" in out


def test_reads_the_tag_from_image_json(aws, tmp_path, capsys):
    world.build(aws, images={"blue": "aaaa", "green": "bbbb"})
    image = tmp_path / "image.json"
    image.write_text(
        json.dumps({"repository": "chatsvc", "tag": "c0ffee123456", "uri": "x:c0ffee123456"})
    )
    out = tmp_path / "deployment.json"
    code = deployment_tags.main(
        [
            "--load-balancer",
            "chatsvc-alb",
            "--image-json",
            str(image),
            "--template-prefix",
            NEW,
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert json.loads(out.read_text())["TestImageTag"] == "c0ffee123456"


@pytest.mark.parametrize("tag", ["", "-bad", "a b", "x" * 129])
def test_rejects_an_invalid_tag(aws, tmp_path, capsys, tag):
    code, data, _out = discover(tmp_path, capsys, tag=tag)
    assert code == 2
    assert data is None


# --------------------------------------------- the release stack (Stubber: states moto lacks)


@pytest.fixture
def cfn():
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("cloudformation", region_name=world.REGION)
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def stack_in(status: str) -> dict:
    import datetime

    return {
        "Stacks": [
            {
                "StackName": "chatsvc-release",
                "StackStatus": status,
                "CreationTime": datetime.datetime(2026, 1, 1),
            }
        ]
    }


def test_a_failed_first_create_is_deleted_so_the_deploy_can_create_again(cfn):
    client, stubber = cfn
    stubber.add_response("describe_stacks", stack_in("ROLLBACK_COMPLETE"))
    stubber.add_response("delete_stack", {}, {"StackName": "chatsvc-release"})
    stubber.add_client_error(  # the waiter's poll: gone
        "describe_stacks", "ValidationError", "Stack with id chatsvc-release does not exist"
    )
    notes = deployment_tags.prepare_release_stack(client, "chatsvc-release")
    assert "deleted release stack chatsvc-release" in notes[0]


@pytest.mark.parametrize(
    ("status", "advice"),
    [
        ("UPDATE_ROLLBACK_FAILED", "continue-update-rollback"),
        ("UPDATE_IN_PROGRESS", "wait for it to finish"),
        ("DELETE_FAILED", "wait for it to finish"),
    ],
)
def test_a_busy_or_failed_release_stack_stops_the_release(cfn, status, advice):
    client, stubber = cfn
    stubber.add_response("describe_stacks", stack_in(status))
    with pytest.raises(deployment_tags.DiscoveryError, match=advice):
        deployment_tags.prepare_release_stack(client, "chatsvc-release")


@pytest.mark.parametrize(
    "status", ["CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE"]
)
def test_a_stable_release_stack_is_left_alone(cfn, status):
    client, stubber = cfn
    stubber.add_response("describe_stacks", stack_in(status))
    assert deployment_tags.prepare_release_stack(client, "chatsvc-release") == []


def test_the_release_stack_check_runs_before_discovery(aws, tmp_path, capsys):
    """Against moto: a stack that does not exist yet is fine (the deploy creates it)."""
    code, _data, out = discover(tmp_path, capsys, "--release-stack", "chatsvc-release")
    assert code == 0, out
    assert "release stack chatsvc-release does not exist yet" in out


# --------------------------------------- the swap Lambda runs this bundle's code (Stubber)


@pytest.fixture
def lambda_client():
    import boto3
    from botocore.stub import Stubber

    client = boto3.client("lambda", region_name=world.REGION)
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def answer(stubber, payload: dict, **extra) -> None:
    import io

    from botocore.response import StreamingBody

    body = json.dumps(payload).encode()
    stubber.add_response(
        "invoke",
        {"StatusCode": 200, "Payload": StreamingBody(io.BytesIO(body), len(body)), **extra},
        {"FunctionName": "chatsvc-swap", "Payload": b'{"action": "version"}'},
    )


def test_the_lambda_answers_with_the_hash_of_its_own_code():
    result = swap_lambda.handler({"action": "version"}, None)
    assert result == {"ok": True, "sha256": swap_lambda.code_sha256()}
    assert len(result["sha256"]) == 64


def test_a_swap_lambda_running_this_bundles_code_passes(lambda_client):
    client, stubber = lambda_client
    answer(stubber, {"ok": True, "sha256": swap_lambda.code_sha256()})
    (note,) = deployment_tags.check_swap_function(client, "chatsvc-swap")
    assert "runs this bundle's code" in note


def test_a_swap_lambda_running_older_code_stops_the_release(lambda_client):
    client, stubber = lambda_client
    answer(stubber, {"ok": True, "sha256": "0" * 64})
    with pytest.raises(deployment_tags.DiscoveryError, match="SwapLambdaObjectVersion"):
        deployment_tags.check_swap_function(client, "chatsvc-swap")


def test_a_swap_lambda_that_cannot_answer_stops_the_release(lambda_client):
    client, stubber = lambda_client
    answer(stubber, {"errorMessage": "boom"}, FunctionError="Unhandled")
    with pytest.raises(deployment_tags.DiscoveryError, match="did not say which code"):
        deployment_tags.check_swap_function(client, "chatsvc-swap")
