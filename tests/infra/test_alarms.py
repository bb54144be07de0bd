"""The alarms: which page, which follow LiveColor, which the swap Lambda watches.

The templates are evaluated for real (Ref, Fn::If, Fn::Sub, Fn::FindInMap and the
Conditions) with concrete parameters, once per live color, and the resulting alarms
are also put into moto's CloudWatch and looked up the way the swap Lambda's bake
does (DescribeAlarms by name prefix), before and after a swap.
"""

import fnmatch
import json
import os
import re
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from tests.infra.cfn import ROOT, load, nested_stacks

pytestmark = pytest.mark.infra

REGION = "us-east-1"
ACCOUNT = "123456789012"
PREFIX = "chatsvc-dev"
TOPIC = f"arn:aws:sns:{REGION}:{ACCOUNT}:{PREFIX}-operators"
COLORS = ("blue", "green")
OTHER = {"blue": "green", "green": "blue"}
LIVE_WHATS = {
    "target-5xx",
    "unhealthy-hosts",
    "healthy-tasks",
    "latency-p99",
    "cpu",
    "memory",
}
ACTION_KEYS = ("AlarmActions", "OKActions", "InsufficientDataActions")
PSEUDO = {
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::StackName": "stack",
}
NO_VALUE = object()

ALARMS_PARAMS = {
    "Prefix": PREFIX,
    "TopicArn": TOPIC,
    "LoadBalancerFullName": f"app/{PREFIX}/0123456789abcdef",
    "BlueTargetGroupFullName": "targetgroup/blue-tg/1111111111111111",
    "GreenTargetGroupFullName": "targetgroup/green-tg/2222222222222222",
    "ClusterName": PREFIX,
    "BlueServiceName": f"{PREFIX}-web-blue",
    "GreenServiceName": f"{PREFIX}-web-green",
    "WorkerServiceName": f"{PREFIX}-worker",
    "QueueName": f"{PREFIX}-messages",
    "DeadLetterQueueName": f"{PREFIX}-messages-dlq",
    "TableName": f"{PREFIX}-messages",
    "SwapFunctionName": f"{PREFIX}-swap",
}
TARGET_GROUP = {c: ALARMS_PARAMS[f"{c.capitalize()}TargetGroupFullName"] for c in COLORS}
SERVICE = {c: ALARMS_PARAMS[f"{c.capitalize()}ServiceName"] for c in COLORS}


# --- a small CloudFormation evaluator ----------------------------------------------


class Evaluator:
    """Resolves a template's intrinsics for given parameter values (defaults filled in).
    A resource's Ref or GetAtt becomes "<LogicalId>" / "<LogicalId.Attribute>"."""

    def __init__(self, template: dict, params: dict):
        self.template = template
        declared = template.get("Parameters", {})
        unknown = set(params) - set(declared)
        assert not unknown, f"not parameters of the template: {unknown}"
        self.params = {k: v["Default"] for k, v in declared.items() if "Default" in v}
        self.params.update(params)
        missing = set(declared) - set(self.params)
        assert not missing, f"no value for {missing}"
        for name, value in self.params.items():
            allowed = declared[name].get("AllowedValues")
            assert allowed is None or value in allowed, f"{name}={value!r} not in {allowed}"
        self.conditions = {
            name: self.condition(body) for name, body in template.get("Conditions", {}).items()
        }

    def condition(self, node):
        if isinstance(node, dict) and "Condition" in node:
            return self.condition(self.template["Conditions"][node["Condition"]])
        ((fn, args),) = node.items()
        if fn == "Fn::Equals":
            left, right = (self.value(a) for a in args)
            return str(left) == str(right)
        if fn == "Fn::Not":
            return not self.condition(args[0])
        if fn == "Fn::And":
            return all(self.condition(a) for a in args)
        if fn == "Fn::Or":
            return any(self.condition(a) for a in args)
        raise AssertionError(f"condition {fn} not supported")

    def ref(self, name: str):
        if name in PSEUDO:
            return PSEUDO[name]
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.params:
            return self.params[name]
        assert name in self.template["Resources"], f"Ref to unknown {name}"
        return f"<{name}>"

    def sub(self, text: str, variables: dict) -> str:
        def replace(match):
            name = match.group(1)
            if name in variables:
                return str(variables[name])
            if "." in name:
                logical_id, _ = name.split(".", 1)
                assert logical_id in self.template["Resources"], name
                return f"<{name}>"
            return str(self.ref(name))

        return re.sub(r"\$\{([\w:.]+)\}", replace, text)

    def value(self, node):
        if isinstance(node, list):
            items = [self.value(item) for item in node]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((key, args),) = node.items()
            if key == "Ref":
                return self.ref(args)
            if key == "Fn::If":
                name, when_true, when_false = args
                return self.value(when_true if self.conditions[name] else when_false)
            if key == "Fn::Sub":
                if isinstance(args, str):
                    return self.sub(args, {})
                text, variables = args
                return self.sub(text, {k: self.value(v) for k, v in variables.items()})
            if key == "Fn::FindInMap":
                mapping, top, second = (self.value(a) for a in args)
                return self.template["Mappings"][mapping][top][second]
            if key == "Fn::GetAtt":
                return "<" + ".".join(args) + ">"
        return {k: v for k, v in ((k, self.value(v)) for k, v in node.items()) if v is not NO_VALUE}

    def alarms(self) -> dict[str, dict]:
        """{alarm name: resolved properties} of the alarms this stack would create."""
        found = {}
        for resource in self.template["Resources"].values():
            if resource["Type"] != "AWS::CloudWatch::Alarm":
                continue
            if "Condition" in resource and not self.conditions[resource["Condition"]]:
                continue
            properties = self.value(resource["Properties"])
            found[properties["AlarmName"]] = properties
        return found


def release_alarms(live: str, **params) -> dict[str, dict]:
    return Evaluator(load("alarms.yaml"), {**ALARMS_PARAMS, "LiveColor": live, **params}).alarms()


def dimensions(alarm: dict) -> dict[str, str]:
    return {d["Name"]: d["Value"] for d in alarm.get("Dimensions", [])}


def split(alarms: dict, role: str) -> dict[str, dict]:
    """{what: alarm} of the PREFIX-<role>-<what> alarms."""
    head = f"{PREFIX}-{role}-"
    return {name.removeprefix(head): a for name, a in alarms.items() if name.startswith(head)}


def pages(alarm: dict) -> bool:
    return alarm.get("AlarmActions") == [TOPIC] and alarm.get("OKActions") == [TOPIC]


def silent(alarm: dict) -> bool:
    return all(not alarm.get(key) for key in ACTION_KEYS)


# --- the live and the test color ---------------------------------------------------


@pytest.mark.parametrize("live", COLORS)
def test_live_alarms_watch_the_live_color_and_test_alarms_the_other(live):
    alarms = release_alarms(live)
    live_alarms, test_alarms = split(alarms, "live"), split(alarms, "test")
    assert set(live_alarms) == LIVE_WHATS
    assert set(test_alarms) == LIVE_WHATS
    for role, color, group in (("live", live, live_alarms), ("test", OTHER[live], test_alarms)):
        for what, alarm in group.items():
            dims = dimensions(alarm)
            if alarm["Namespace"] == "AWS/ApplicationELB":
                assert dims == {
                    "LoadBalancer": ALARMS_PARAMS["LoadBalancerFullName"],
                    "TargetGroup": TARGET_GROUP[color],
                }, f"{role}-{what}"
            else:
                assert alarm["Namespace"] == "AWS/ECS", what
                assert dims == {"ClusterName": PREFIX, "ServiceName": SERVICE[color]}, what


def test_swapping_retargets_the_same_alarm_names():
    """The swap is a LiveColor update: same names (no replacement), other color."""
    blue, green = release_alarms("blue"), release_alarms("green")
    assert set(blue) == set(green)
    for what in LIVE_WHATS:
        for role in ("live", "test"):
            name = f"{PREFIX}-{role}-{what}"
            assert dimensions(blue[name]) != dimensions(green[name]), name
            # Only the color-picking dimension moves.
            assert {k: v for k, v in blue[name].items() if k != "Dimensions"} == {
                k: v for k, v in green[name].items() if k != "Dimensions"
            }
        assert dimensions(blue[f"{PREFIX}-live-{what}"]) == dimensions(
            green[f"{PREFIX}-test-{what}"]
        )
    # Everything else is color-blind.
    for name in set(blue) - {f"{PREFIX}-{r}-{w}" for r in ("live", "test") for w in LIVE_WHATS}:
        assert blue[name] == green[name], name


@pytest.mark.parametrize("live", COLORS)
def test_live_alarms_page_and_test_alarms_never_do(live):
    alarms = release_alarms(live)
    for what, alarm in split(alarms, "live").items():
        assert pages(alarm), f"live-{what} does not page"
        assert "PAGES" in alarm["AlarmDescription"]
    for what, alarm in split(alarms, "test").items():
        assert silent(alarm), f"test-{what} has actions: it would page"
        assert "Never pages" in alarm["AlarmDescription"], what


def test_test_alarms_mirror_the_live_ones():
    alarms = release_alarms("blue")
    live, test = split(alarms, "live"), split(alarms, "test")
    ignored = {"AlarmName", "AlarmDescription", "Dimensions", *ACTION_KEYS}
    for what in LIVE_WHATS:
        same = {k: v for k, v in live[what].items() if k not in ignored}
        assert same == {k: v for k, v in test[what].items() if k not in ignored}, what
        assert set(dimensions(live[what])) == set(dimensions(test[what])), what


def test_the_other_release_alarms_page_and_are_not_watched_by_the_bake():
    alarms = release_alarms("green")
    others = {
        name for name in alarms if not name.startswith((f"{PREFIX}-live-", f"{PREFIX}-test-"))
    }
    assert others == {
        f"{PREFIX}-{what}"
        for what in (
            "alb-5xx",
            "worker-cpu",
            "worker-memory",
            "queue-oldest-message",
            "dlq-not-empty",
            "table-write-throttles",
            "table-read-throttles",
            "swap-lambda-errors",
            "webhook-endpoint-disabled",
        )
    }
    for name in others:
        assert alarms[name]["AlarmActions"] == [TOPIC], name
    # No per-color alarm is left over from before the split.
    assert not [n for n in alarms if re.search(r"-(blue|green)-", n)]


def test_live_alarms_catch_a_bad_release_within_five_minutes_without_flapping():
    for what, alarm in split(release_alarms("blue"), "live").items():
        assert alarm["Period"] == 60, what
        assert 3 <= alarm["DatapointsToAlarm"] <= alarm["EvaluationPeriods"] <= 5, what
        assert alarm["Period"] * alarm["DatapointsToAlarm"] <= 300, what
        assert alarm["TreatMissingData"] in ("notBreaching", "breaching"), what
    live = split(release_alarms("blue"), "live")
    # Traffic metrics: no request, no datapoint, nothing wrong.
    for what in ("target-5xx", "latency-p99", "unhealthy-hosts", "cpu", "memory"):
        assert live[what]["TreatMissingData"] == "notBreaching", what


def test_latency_alarm_is_p99_of_target_response_time():
    template = load("alarms.yaml")
    assert template["Parameters"]["LatencyP99ThresholdSeconds"]["Default"] == 1
    alarm = split(release_alarms("blue"), "live")["latency-p99"]
    assert alarm["MetricName"] == "TargetResponseTime"
    assert alarm["ExtendedStatistic"] == "p99" and "Statistic" not in alarm
    assert alarm["Threshold"] == 1 and alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert (
        split(release_alarms("blue", LatencyP99ThresholdSeconds=2.5), "live")["latency-p99"][
            "Threshold"
        ]
        == 2.5
    )


@pytest.mark.parametrize("environment", ["dev", "staging", "production"])
def test_healthy_tasks_alarm_uses_the_environments_web_minimum(environment):
    release = load("release.yaml")
    evaluator = Evaluator(
        release,
        {
            "PlatformStackName": "platform",
            "Environment": environment,
            "ArtifactBucket": "bucket",
            "TemplatePrefix": "t/",
            "BlueTemplatePrefix": "b/",
            "GreenTemplatePrefix": "g/",
            "BlueImageTag": "a",
            "GreenImageTag": "b",
            "LiveColor": "green",
        },
    )
    passed = evaluator.value(release["Resources"]["Alarms"]["Properties"]["Parameters"])
    assert passed["LiveColor"] == "green"
    web_minimum = load("web-service.yaml")["Mappings"]["Sizes"][environment]["DesiredCount"]
    assert (
        passed["MinHealthyTasks"]
        == web_minimum
        == {"dev": 1, "staging": 2, "production": 3}[environment]
    )
    alarm = split(release_alarms("green", MinHealthyTasks=web_minimum), "live")["healthy-tasks"]
    assert alarm["MetricName"] == "HealthyHostCount"
    assert alarm["Threshold"] == web_minimum
    assert alarm["ComparisonOperator"] == "LessThanThreshold"
    assert alarm["Statistic"] == "Minimum"


def test_release_passes_live_color_to_the_alarms_stack():
    _, passed = nested_stacks(load("release.yaml"))["Alarms"]
    assert passed["LiveColor"] == {"Ref": "LiveColor"}
    assert load("alarms.yaml")["Parameters"]["LiveColor"]["AllowedValues"] == list(COLORS)
    assert load("alarms.yaml")["Conditions"]["BlueIsLive"] == {
        "Fn::Equals": [{"Ref": "LiveColor"}, "blue"]
    }


# --- what the swap Lambda's bake sees ---------------------------------------------


def put_alarms(cloudwatch, alarms: dict[str, dict]) -> None:
    """PutMetricAlarm per alarm, as CloudFormation does on create and on update."""
    for properties in alarms.values():
        request = {k: v for k, v in properties.items() if k != "Dimensions"}
        if "Dimensions" in properties:
            request["Dimensions"] = properties["Dimensions"]
        request["Threshold"] = float(request["Threshold"])
        cloudwatch.put_metric_alarm(**request)


def described(cloudwatch, state: str | None = None, **filters) -> dict[str, dict]:
    pages = cloudwatch.get_paginator("describe_alarms").paginate(**filters)
    found = {a["AlarmName"]: a for page in pages for a in page["MetricAlarms"]}
    # moto ignores StateValue next to AlarmNamePrefix (AWS applies both): filter here.
    return {n: a for n, a in found.items() if state is None or a["StateValue"] == state}


def swap_lambda_environment() -> dict:
    evaluator = Evaluator(
        load("swap-lambda.yaml"),
        {
            "Prefix": PREFIX,
            "LoadBalancerName": PREFIX,
            "ClusterName": PREFIX,
            "ArtifactBucket": "bucket",
            "KmsKeyArn": "key",
            "RepositoryName": PREFIX,
            "RepositoryArn": "repo",
        },
    )
    (function,) = [
        evaluator.value(r["Properties"])
        for r in evaluator.template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function"
    ]
    return function["Environment"]["Variables"]


def test_the_bake_finds_exactly_the_live_alarms_before_and_after_a_swap():
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    prefix = swap_lambda_environment()["ALARM_PREFIX"]
    assert prefix == f"{PREFIX}-live-"
    with mock_aws():
        cloudwatch = boto3.client("cloudwatch", region_name=REGION)
        put_alarms(cloudwatch, release_alarms("blue"))
        watched = described(cloudwatch, AlarmNamePrefix=prefix)
        assert set(watched) == {prefix + what for what in LIVE_WHATS}
        for alarm in watched.values():
            dims = dimensions(alarm)
            assert TARGET_GROUP["blue"] in dims.values() or SERVICE["blue"] in dims.values()
            assert alarm["AlarmActions"] == [TOPIC]
        for alarm in described(cloudwatch, AlarmNamePrefix=f"{PREFIX}-test-").values():
            assert alarm["AlarmActions"] == [] and alarm["OKActions"] == []

        # The swap's stack update puts the same alarms with LiveColor=green.
        put_alarms(cloudwatch, release_alarms("green"))
        watched = described(cloudwatch, AlarmNamePrefix=prefix)
        assert set(watched) == {prefix + what for what in LIVE_WHATS}
        for alarm in watched.values():
            dims = dimensions(alarm)
            assert TARGET_GROUP["green"] in dims.values() or SERVICE["green"] in dims.values()

        # A firing test alarm is not the bake's business; a firing live one is.
        cloudwatch.set_alarm_state(
            AlarmName=f"{PREFIX}-test-target-5xx", StateValue="ALARM", StateReason="test"
        )
        assert not described(cloudwatch, "ALARM", AlarmNamePrefix=prefix)
        cloudwatch.set_alarm_state(
            AlarmName=f"{PREFIX}-live-latency-p99", StateValue="ALARM", StateReason="test"
        )
        assert set(described(cloudwatch, "ALARM", AlarmNamePrefix=prefix)) == {
            f"{PREFIX}-live-latency-p99"
        }


def test_no_other_alarm_anywhere_uses_the_live_or_test_prefix():
    for name in ("database.yaml", "cache.yaml"):
        for resource in load(name)["Resources"].values():
            if resource["Type"] == "AWS::CloudWatch::Alarm":
                text = resource["Properties"]["AlarmName"]["Fn::Sub"]
                assert not text.startswith(("${Prefix}-live-", "${Prefix}-test-")), text


def test_swap_lambda_bakes_with_alarm_prefix_and_bake_seconds():
    template = load("swap-lambda.yaml")
    assert template["Parameters"]["BakeSeconds"]["Default"] == 300
    assert template["Parameters"]["BakeSeconds"]["MinValue"] == 0  # 0: no bake
    variables = template["Resources"]["Function"]["Properties"]["Environment"]["Variables"]
    assert variables["ALARM_PREFIX"] == {"Fn::Sub": "${Prefix}-live-"}
    assert variables["BAKE_SECONDS"] == {"Ref": "BakeSeconds"}
    assert swap_lambda_environment()["BAKE_SECONDS"] == 300
    root = load("root.yaml")
    assert root["Parameters"]["BakeSeconds"]["Default"] == 300
    assert root["Parameters"]["BakeSeconds"]["MinValue"] == 0
    _, passed = nested_stacks(root)["SwapLambda"]
    assert passed["BakeSeconds"] == {"Ref": "BakeSeconds"}


def describe_alarms_statements() -> list[dict]:
    role = load("swap-lambda.yaml")["Resources"]["Role"]["Properties"]
    statements = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    return [
        s
        for s in statements
        if "cloudwatch:DescribeAlarms"
        in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    ]


def test_swap_lambda_may_read_only_the_live_alarms():
    (statement,) = describe_alarms_statements()
    assert statement["Effect"] == "Allow"
    assert statement["Action"] in ("cloudwatch:DescribeAlarms", ["cloudwatch:DescribeAlarms"])
    # The IAM Service Authorization Reference (cfn-lint's copy) says DescribeAlarms
    # takes alarm ARNs, so it is scoped instead of "*".
    policies = next(
        (ROOT / ".venv-infra" / "lib").glob(
            "python3*/site-packages/cfnlint/data/AdditionalSpecs/Policies.json"
        ),
        None,
    )
    if policies is None:
        pytest.fail("cfn-lint's Policies.json is missing: run `make infra-tools`", pytrace=False)
    cloudwatch = json.loads(Path(policies).read_text())["cloudwatch"]
    assert cloudwatch["Actions"]["describealarms"]["Resources"] == ["alarm"]
    resource = Evaluator(
        {"Parameters": {"Prefix": {"Type": "String"}}, "Resources": {}}, {"Prefix": PREFIX}
    ).value(statement["Resource"])
    assert resource == f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{PREFIX}-live-*"

    def arn(name):
        return f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}"

    alarms = release_alarms("blue")
    for name in alarms:
        allowed = fnmatch.fnmatchcase(arn(name), resource)
        assert allowed == name.startswith(swap_lambda_environment()["ALARM_PREFIX"]), name


# --- platform alarms: database and cache -----------------------------------------


def platform_alarms(name: str, **params) -> dict[str, dict]:
    base = {
        "Prefix": PREFIX,
        "PrivateSubnetIds": ["subnet-1", "subnet-2"],
        "SecurityGroupId": "sg-1",
        "KmsKeyArn": "key",
        "TopicArn": TOPIC,
    }
    return Evaluator(load(name), {**base, **params}).alarms()


def test_database_alarms_exist_and_page():
    alarms = platform_alarms("database.yaml")
    assert set(alarms) == {
        f"{PREFIX}-db-{what}"
        for what in ("cpu", "free-storage", "connections", "read-latency", "write-latency")
    }
    for name, alarm in alarms.items():
        assert pages(alarm), name
        metrics = alarm.get("Metrics") or [
            {"MetricStat": {"Metric": {k: alarm[k] for k in ("Namespace", "MetricName")}}}
        ]
        for metric in metrics:
            if "MetricStat" in metric and "Dimensions" in metric["MetricStat"]["Metric"]:
                assert dimensions(metric["MetricStat"]["Metric"]) == {
                    "DBInstanceIdentifier": "<Instance>"
                }
        if "Dimensions" in alarm:
            assert dimensions(alarm) == {"DBInstanceIdentifier": "<Instance>"}
    by_metric = {a.get("MetricName"): a for a in alarms.values()}
    assert by_metric["CPUUtilization"]["ComparisonOperator"] == "GreaterThanThreshold"
    storage = by_metric["FreeStorageSpace"]
    assert storage["ComparisonOperator"] == "LessThanThreshold"
    assert storage["Statistic"] == "Minimum"
    for metric in ("ReadLatency", "WriteLatency"):
        assert by_metric[metric]["ComparisonOperator"] == "GreaterThanThreshold"


def test_database_connections_alarm_is_relative_to_max_connections():
    alarm = platform_alarms("database.yaml", MaxConnections=1600)[f"{PREFIX}-db-connections"]
    metrics = {m["Id"]: m for m in alarm["Metrics"]}
    assert metrics["connections"]["MetricStat"]["Metric"]["MetricName"] == "DatabaseConnections"
    assert metrics["connections"]["ReturnData"] is False
    assert metrics["percent"]["Expression"] == "100 * connections / 1600"
    assert metrics["percent"]["ReturnData"] is True
    assert alarm["Threshold"] == 80
    # root.yaml gives each environment its instance's max_connections.
    root = load("root.yaml")
    _, passed = nested_stacks(root)["Database"]
    assert passed["MaxConnections"] == {
        "Fn::FindInMap": ["Environments", {"Ref": "Environment"}, "DbMaxConnections"]
    }
    for environment, values in root["Mappings"]["Environments"].items():
        assert values["DbMaxConnections"] > 0, environment


@pytest.mark.parametrize("multi_az", ["false", "true"])
def test_redis_alarms_exist_page_and_watch_every_node(multi_az):
    alarms = platform_alarms("cache.yaml", MultiAz=multi_az)
    whats = {"engine-cpu", "memory", "evictions"}
    if multi_az == "true":
        whats.add("replication-lag")
    assert set(alarms) == {f"{PREFIX}-redis-{what}" for what in whats}
    nodes = ["<ReplicationGroup>-001"] + (["<ReplicationGroup>-002"] if multi_az == "true" else [])
    watched_metrics = set()
    for name, alarm in alarms.items():
        assert pages(alarm), name
        stats = [m for m in alarm["Metrics"] if "MetricStat" in m]
        watched = [dimensions(m["MetricStat"]["Metric"])["CacheClusterId"] for m in stats]
        assert watched == nodes, name
        (returned,) = [m for m in alarm["Metrics"] if m["ReturnData"]]
        if len(nodes) == 2:
            assert returned["Expression"] == "MAX([node1, node2])", name
        watched_metrics |= {m["MetricStat"]["Metric"]["MetricName"] for m in stats}
        assert all(m["MetricStat"]["Metric"]["Namespace"] == "AWS/ElastiCache" for m in stats)
    expected = {"EngineCPUUtilization", "DatabaseMemoryUsagePercentage", "Evictions"}
    if multi_az == "true":
        expected.add("ReplicationLag")
    assert watched_metrics == expected
    evictions = alarms[f"{PREFIX}-redis-evictions"]
    assert evictions["Threshold"] == "0" or evictions["Threshold"] == 0
    assert evictions["DatapointsToAlarm"] == evictions["EvaluationPeriods"] >= 3  # sustained


def test_platform_alarms_page_the_notifications_topic_without_a_cycle():
    root = load("root.yaml")
    stacks = nested_stacks(root)
    topic = {"Fn::GetAtt": ["Notifications", "Outputs.TopicArn"]}
    for name in ("Database", "Cache"):
        assert stacks[name][1]["TopicArn"] == topic, name
        assert "DependsOn" not in root["Resources"][name]
    # Notifications is created on its own: it reads nothing from Database or Cache.
    notifications = json.dumps(root["Resources"]["Notifications"])
    assert "Database" not in notifications and "Cache" not in notifications
    assert "DependsOn" not in root["Resources"]["Notifications"]


def test_the_webhook_alarm_watches_what_the_log_filter_counts():
    """The alarm's metric exists only if the cluster's metric filter makes it, from the
    exact line the webhook sender logs when it disables an endpoint."""
    from chatsvc.webhooks.sender import DISABLED_LOG_LINE

    alarm = release_alarms("green")[f"{PREFIX}-webhook-endpoint-disabled"]
    cluster = load("cluster.yaml")
    [metric_filter] = [
        r["Properties"]
        for r in cluster["Resources"].values()
        if r["Type"] == "AWS::Logs::MetricFilter"
    ]
    [transformation] = metric_filter["MetricTransformations"]
    assert transformation["MetricName"] == alarm["MetricName"] == "WebhookEndpointsDisabled"
    assert metric_filter["FilterPattern"] == f'{{ $.message = "{DISABLED_LOG_LINE}" }}'
