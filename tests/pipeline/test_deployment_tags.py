"""deployment_tags against moto's ELBv2: which color is live, and deployment.json."""

from __future__ import annotations

import json

import pytest
from moto import mock_aws

from pipeline import deployment_tags
from pipeline.swap_lambda import MARKER_PRODUCTION_TG, MARKER_TEST_TG
from tests.pipeline import world

pytestmark = pytest.mark.infra

KEYS = set(deployment_tags.KEYS)


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", world.REGION)
    with mock_aws():
        yield world.clients()


def discover(tmp_path, capsys, *args, name="chatsvc-alb", tag="newtag000001"):
    out = tmp_path / "out" / "deployment.json"
    code = deployment_tags.main(
        ["--load-balancer", name, f"--image-tag={tag}", "--out", str(out), *args]
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


def test_interrupted_swap_stops_the_release(aws, tmp_path, capsys):
    w = world.build(aws, live="blue", images={"blue": "aaaa", "green": "bbbb"})
    aws["elbv2"].modify_listener(
        ListenerArn=w.production_listener,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": w.tg["green"]}],
    )
    aws["elbv2"].add_tags(
        ResourceArns=[w.lb_arn],
        Tags=[
            {"Key": MARKER_PRODUCTION_TG, "Value": w.tg["green"]},
            {"Key": MARKER_TEST_TG, "Value": w.tg["blue"]},
        ],
    )
    code, data, out = discover(tmp_path, capsys)
    assert code == 1
    assert data is None
    assert "a swap was interrupted" in out and "--to-color" in out


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
        ["--load-balancer", "chatsvc-alb", "--image-json", str(image), "--out", str(out)]
    )
    assert code == 0
    assert json.loads(out.read_text())["TestImageTag"] == "c0ffee123456"


@pytest.mark.parametrize("tag", ["", "-bad", "a b", "x" * 129])
def test_rejects_an_invalid_tag(aws, tmp_path, capsys, tag):
    code, data, _out = discover(tmp_path, capsys, tag=tag)
    assert code == 2
    assert data is None
