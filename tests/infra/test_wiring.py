"""Root and children agree: every parameter a root passes exists in the child, every
required child parameter is passed, every output a root reads exists, every value the
release stack imports is exported by the platform root, and the pipeline's deploy action
passes exactly what release.yaml takes."""

import json
import re

import pytest

from pipeline import deployment_tags
from tests.infra.cfn import ROOT, TEMPLATES, load, nested_stacks, template_names, walk

pytestmark = pytest.mark.infra

ROOTS = ["root.yaml", "release.yaml"]
STANDALONE = {"root.yaml", "release.yaml", "bootstrap.yaml"}
DEPLOYMENT_JSON_KEYS = set(deployment_tags.KEYS)
ACCOUNT = "${AWS::Region}:${AWS::AccountId}"
RELEASE_STACK_ARN = "arn:${AWS::Partition}:cloudformation:" + ACCOUNT + ":stack/${Prefix}-release/*"
ECS = "arn:${AWS::Partition}:ecs:" + ACCOUNT


def output_references(node) -> set[tuple[str, str]]:
    """(stack logical id, output name) of every Fn::GetAtt X.Outputs.Y, also inside Fn::Sub."""
    found = set()
    for item in walk(node):
        if not isinstance(item, dict):
            continue
        if "Fn::GetAtt" in item:
            target, attribute = item["Fn::GetAtt"]
            if attribute.startswith("Outputs."):
                found.add((target, attribute.removeprefix("Outputs.")))
        if "Fn::Sub" in item:
            text = item["Fn::Sub"] if isinstance(item["Fn::Sub"], str) else item["Fn::Sub"][0]
            found.update(re.findall(r"\$\{(\w+)\.Outputs\.(\w+)\}", text))
    return found


@pytest.mark.parametrize("root", ROOTS)
def test_parameters_passed_to_children_exist_on_both_sides(root):
    for logical_id, (child, passed) in nested_stacks(load(root)).items():
        assert (TEMPLATES / child).exists(), f"{root}/{logical_id}: {child} is missing"
        declared = load(child).get("Parameters", {})
        unknown = set(passed) - set(declared)
        assert not unknown, f"{root}/{logical_id} passes {unknown} that {child} lacks"
        required = {name for name, spec in declared.items() if "Default" not in spec}
        missing = required - set(passed)
        assert not missing, f"{root}/{logical_id} does not pass {missing} required by {child}"


@pytest.mark.parametrize("root", ROOTS)
def test_outputs_read_from_children_exist(root):
    template = load(root)
    children = nested_stacks(template)
    references = output_references(template["Resources"]) | output_references(
        template.get("Outputs", {})
    )
    assert references, f"{root} reads no child output"
    for logical_id, output in references:
        assert logical_id in children, f"{root}: {logical_id} is not a nested stack"
        outputs = load(children[logical_id][0]).get("Outputs", {})
        assert output in outputs, f"{root}: {children[logical_id][0]} has no output {output}"


@pytest.mark.parametrize("root", ROOTS)
def test_root_uses_every_parameter_it_declares(root):
    template = load(root)
    text = json.dumps({k: v for k, v in template.items() if k != "Parameters"})
    for name in template["Parameters"]:
        assert f'"Ref": "{name}"' in text or "${" + name + "}" in text, f"{root}: {name} unused"


def test_every_child_template_is_used_by_a_root():
    used = {child for root in ROOTS for child, _ in nested_stacks(load(root)).values()}
    assert set(template_names()) - STANDALONE == used


def test_release_imports_only_what_the_platform_root_exports():
    exports = {}
    for name, output in load("root.yaml")["Outputs"].items():
        if "Export" in output:
            export = output["Export"]["Name"]["Fn::Sub"]
            assert export == "${AWS::StackName}-" + name
            exports[name] = output
    imports = set()
    for item in walk(load("release.yaml")):
        if isinstance(item, dict) and "Fn::ImportValue" in item:
            (name,) = re.fullmatch(
                r"\$\{PlatformStackName\}-(\w+)", item["Fn::ImportValue"]["Fn::Sub"]
            ).groups()
            imports.add(name)
    assert imports, "release.yaml imports nothing"
    assert imports - set(exports) == set(), "imported but not exported"
    assert set(exports) - imports == set(), "exported but never imported"


def deploy_action():
    pipeline = load("pipeline.yaml")["Resources"]["Pipeline"]["Properties"]
    actions = [a for stage in pipeline["Stages"] for a in stage["Actions"]]
    (deploy,) = [a for a in actions if a["ActionTypeId"]["Provider"] == "CloudFormation"]
    return deploy, actions


def test_deploy_overrides_match_release_parameters_and_fit_the_limit():
    deploy, _ = deploy_action()
    config = deploy["Configuration"]
    assert config["TemplatePath"] == "SourceBundle::cloudformation/release.yaml"
    # Realistic, long values for the pipeline stack's own parameters.
    values = {
        "PlatformStackName": "chatsvc-production-platform",
        "Environment": "production",
        "CertificateArn": "arn:aws:acm:eu-central-1:123456789012:certificate/"
        "12345678-1234-1234-1234-123456789012",
        "DomainName": "chat.lms-production.example.com",
        "ArtifactBucket": "chatsvc-bundle-123456789012-eu-central-1",
    }
    rendered = re.sub(
        r"\$\{(\w+)\}", lambda m: values[m.group(1)], config["ParameterOverrides"]["Fn::Sub"]
    )
    assert len(rendered) <= 1000, f"ParameterOverrides is {len(rendered)} characters (limit 1000)"
    overrides = json.loads(rendered)
    parameters = load("release.yaml")["Parameters"]
    required = {name for name, spec in parameters.items() if "Default" not in spec}
    assert required <= set(overrides) <= set(parameters)
    inputs = {a["Name"] for a in deploy["InputArtifacts"]}
    for name, value in overrides.items():
        if isinstance(value, dict):
            artifact, filename, key = value["Fn::GetParam"]
            assert artifact in inputs, f"{name}: {artifact} is not an input of the deploy action"
            if filename == "deployment.json":
                assert key in DEPLOYMENT_JSON_KEYS, f"{name}: deployment.json has no {key}"
    for key in ("BlueImageTag", "GreenImageTag", "BlueTemplatePrefix", "GreenTemplatePrefix"):
        assert overrides[key] == {"Fn::GetParam": ["DiscoverOutput", "deployment.json", key]}
    assert overrides["TemplatePrefix"] == {
        "Fn::GetParam": ["TemplatesOutput", "templates.json", "TemplatePrefix"]
    }
    assert "WorkerImageTag" not in overrides  # the worker follows LiveColor


def codebuild_actions():
    """(action, project properties, buildspec path) for each CodeBuild action."""
    resources = load("pipeline.yaml")["Resources"]
    _, actions = deploy_action()
    for action in actions:
        if action["ActionTypeId"]["Provider"] == "CodeBuild":
            project = resources[action["Configuration"]["ProjectName"]["Ref"]]["Properties"]
            yield action, project, project["Source"]["BuildSpec"]


def test_pipeline_projects_use_existing_buildspecs_and_their_input_artifacts():
    for action, _, buildspec in codebuild_actions():
        inputs = [a["Name"] for a in action["InputArtifacts"]]
        if len(inputs) > 1:
            assert action["Configuration"]["PrimarySource"] in inputs
        if not buildspec.startswith("pipeline/"):
            continue  # inline
        path = ROOT / buildspec
        assert path.exists(), f"{action['Name']}: {buildspec} is missing"
        for needed in re.findall(r"CODEBUILD_SRC_DIR_(\w+)", path.read_text()):
            assert needed in inputs, f"{buildspec} reads artifact {needed}; inputs {inputs}"


def test_codebuild_projects_set_the_environment_their_buildspecs_require():
    for action, project, buildspec in codebuild_actions():
        if not buildspec.startswith("pipeline/"):
            continue
        given = {v["Name"] for v in project["Environment"].get("EnvironmentVariables", [])}
        given |= {
            v["name"] for v in json.loads(action["Configuration"].get("EnvironmentVariables", "[]"))
        }
        given.add("AWS_DEFAULT_REGION")  # CodeBuild sets it
        required = set(re.findall(r"\$\{(\w+):\?", (ROOT / buildspec).read_text()))
        assert required <= given, f"{buildspec} needs {required - given}"


def in_run_order(stage: dict) -> list[tuple[int, str, str]]:
    """(RunOrder, action name, provider) of a stage's actions, in the order they run."""
    return sorted(
        (a.get("RunOrder", 1), a["Name"], a["ActionTypeId"]["Provider"]) for a in stage["Actions"]
    )


def test_stage_order():
    pipeline = load("pipeline.yaml")["Resources"]["Pipeline"]["Properties"]
    assert pipeline["PipelineType"] == "V2"
    assert pipeline["ExecutionMode"] == "SUPERSEDED"
    stages = {s["Name"]: s for s in pipeline["Stages"]}
    assert list(stages) == ["Source", "Build", "Discover", "Release"]
    providers = {a["ActionTypeId"]["Provider"] for a in stages["Source"]["Actions"]}
    assert providers == {"CodeStarSourceConnection", "S3"}
    # The templates are published before the deployment tags name them.
    assert [name for _, name, _ in in_run_order(stages["Discover"])] == [
        "PublishTemplates",
        "DeploymentTags",
    ]


def test_one_stage_locks_a_release_from_deploy_to_swap():
    """CodePipeline lets one execution into a stage at a time: everything from the
    deploy to the swap must be in the Release stage, one action after another, so a
    second run waits at its entrance until the first has swapped (or failed)."""
    pipeline = load("pipeline.yaml")["Resources"]["Pipeline"]["Properties"]
    (release,) = [s for s in pipeline["Stages"] if s["Name"] == "Release"]
    assert in_run_order(release) == [
        (1, "TestService", "CloudFormation"),
        (2, "Migrations", "CodeBuild"),
        (3, "TestListener", "CodeBuild"),
        (4, "Promote", "Manual"),
        (5, "SwapListeners", "Lambda"),
    ]
    for stage in pipeline["Stages"]:
        if stage is not release:
            kinds = {a["ActionTypeId"]["Category"] for a in stage["Actions"]}
            assert not kinds & {"Deploy", "Approval", "Invoke", "Test"}, stage["Name"]


def test_no_secret_or_token_parameters():
    for name in template_names():
        for parameter in load(name).get("Parameters", {}):
            assert not re.search(r"token|password|secret(?!arn)", parameter, re.IGNORECASE) or (
                parameter.endswith("SecretArn") or parameter.endswith("SecretName")
            ), f"{name}: parameter {parameter} looks like a credential"


def test_security_group_rules_are_narrow():
    resources = load("security-groups.yaml")["Resources"]
    rules = {
        name: r["Properties"]
        for name, r in resources.items()
        if r["Type"] in {"AWS::EC2::SecurityGroupIngress", "AWS::EC2::SecurityGroupEgress"}
    }

    def group(ref):
        return ref["Fn::GetAtt"][0]

    ingress = {
        (
            group(p["GroupId"]),
            group(p["SourceSecurityGroupId"]),
            p["FromPort"]["Ref"] if isinstance(p["FromPort"], dict) else p["FromPort"],
        )
        for name, p in rules.items()
        if resources[name]["Type"].endswith("Ingress") and "SourceSecurityGroupId" in p
    }
    assert ingress == {
        ("TaskSecurityGroup", "LoadBalancerSecurityGroup", "ContainerPort"),
        ("CacheSecurityGroup", "TaskSecurityGroup", 6379),
        ("DatabaseSecurityGroup", "TaskSecurityGroup", 5432),
    }
    for p in rules.values():
        assert p["FromPort"] == p["ToPort"] and p["IpProtocol"] == "tcp"
    tasks = resources["TaskSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in tasks
    assert [(e["FromPort"], e["CidrIp"]) for e in tasks["SecurityGroupEgress"]] == [
        (443, "0.0.0.0/0")
    ]
    params = load("security-groups.yaml")["Parameters"]
    assert params["ContainerPort"]["Default"] == 8000
    smoke = resources["SmokeTestSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in smoke
    assert [
        (e["FromPort"]["Ref"] if isinstance(e["FromPort"], dict) else e["FromPort"], e["CidrIp"])
        for e in smoke["SecurityGroupEgress"]
    ] == [("TestListenerPort", "0.0.0.0/0"), (443, "0.0.0.0/0")]


def test_test_listener_is_open_only_to_the_nat_addresses_and_an_optional_cidr():
    """The unapproved release on 8080: the smoke test (in the VPC, so from the NAT
    gateways' addresses) and TestListenerCidr, which by default is nobody."""
    template = load("security-groups.yaml")
    resources, params = template["Resources"], template["Parameters"]
    assert params["TestListenerCidr"]["Default"] == ""
    assert load("root.yaml")["Parameters"]["TestListenerCidr"]["Default"] == ""
    inline = resources["LoadBalancerSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    sources = {
        (rule["FromPort"]["Ref"] if isinstance(rule["FromPort"], dict) else rule["FromPort"]): []
        for rule in inline
    }
    for rule in inline:
        port = rule["FromPort"]["Ref"] if isinstance(rule["FromPort"], dict) else rule["FromPort"]
        sources[port].append((None, rule["CidrIp"]))
    for resource in resources.values():
        p = resource["Properties"]
        if resource["Type"] == "AWS::EC2::SecurityGroupIngress" and "CidrIp" in p:
            assert p["GroupId"] == {"Fn::GetAtt": ["LoadBalancerSecurityGroup", "GroupId"]}
            sources[p["FromPort"]["Ref"]].append((resource.get("Condition"), p["CidrIp"]))
    assert sources == {
        "ProductionListenerPort": [(None, "0.0.0.0/0")],
        "TestListenerPort": [
            (None, {"Fn::Sub": "${NatPublicIp1}/32"}),
            ("HasSecondNat", {"Fn::Sub": "${NatPublicIp2}/32"}),
            ("HasTestListenerCidr", {"Ref": "TestListenerCidr"}),
        ],
    }
    conditions = template["Conditions"]
    assert conditions["HasTestListenerCidr"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "TestListenerCidr"}, ""]}]
    }
    # network.yaml repeats the first address when there is one NAT gateway.
    assert conditions["HasSecondNat"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "NatPublicIp1"}, {"Ref": "NatPublicIp2"}]}]
    }
    network = load("network.yaml")["Outputs"]
    assert network["NatPublicIp1"]["Value"] == {"Ref": "NatGateway1Eip"}
    assert network["NatPublicIp2"]["Value"] == {
        "Fn::If": ["NatPerAz", {"Ref": "NatGateway2Eip"}, {"Ref": "NatGateway1Eip"}]
    }


def test_smoke_test_runs_inside_the_vpc_with_its_own_group():
    resources = load("pipeline.yaml")["Resources"]
    project = resources["SmokeProject"]["Properties"]
    assert project["VpcConfig"] == {
        "VpcId": {"Ref": "VpcId"},
        "Subnets": {"Fn::Split": [",", {"Ref": "PrivateSubnetIds"}]},
        "SecurityGroupIds": [{"Ref": "SmokeTestSecurityGroupId"}],
    }
    (_, passed) = nested_stacks(load("root.yaml"))["Pipeline"]
    assert passed["SmokeTestSecurityGroupId"] == {
        "Fn::GetAtt": ["SecurityGroups", "Outputs.SmokeTestSecurityGroupId"]
    }
    statements = resources["SmokeRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
    granted = {
        action: statement
        for statement in statements
        for action in (
            statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        )
    }
    # What CodeBuild needs to place a build in a VPC (CodeBuild user guide, VPC support).
    for action in (
        "ec2:CreateNetworkInterface",
        "ec2:DescribeDhcpOptions",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DeleteNetworkInterface",
        "ec2:DescribeSubnets",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeVpcs",
        "ec2:CreateNetworkInterfacePermission",
    ):
        assert action in granted, action
    condition = granted["ec2:CreateNetworkInterfacePermission"]["Condition"]["StringEquals"]
    assert condition["ec2:AuthorizedService"] == "codebuild.amazonaws.com"
    assert len(condition["ec2:Subnet"]) == 2  # the two private subnets


def test_release_stack_owns_traffic_state_through_live_color():
    """Flipping LiveColor alone moves the listeners, the live tags, the worker's image
    and the load balancer's and worker's template revision; a color's web service
    runs its own revision, so a Deploy never gives the live color a new one."""
    release = load("release.yaml")
    resources, params = release["Resources"], release["Parameters"]
    assert "WorkerImageTag" not in params
    for name in ("BlueTemplatePrefix", "GreenTemplatePrefix"):
        assert params[name]["Type"] == "String" and params[name]["MinLength"] == 1
        assert release["Outputs"][name]["Value"] == {"Ref": name}
    assert release["Conditions"]["BlueIsLive"] == {"Fn::Equals": [{"Ref": "LiveColor"}, "blue"]}
    live_prefix = {
        "Fn::If": ["BlueIsLive", {"Ref": "BlueTemplatePrefix"}, {"Ref": "GreenTemplatePrefix"}]
    }

    def url(name):
        return resources[name]["Properties"]["TemplateURL"]["Fn::Sub"]

    assert url("BlueService").endswith("/${BlueTemplatePrefix}web-service.yaml")
    assert url("GreenService").endswith("/${GreenTemplatePrefix}web-service.yaml")
    assert url("Alarms").endswith("/${TemplatePrefix}alarms.yaml")
    for name, child in (("LoadBalancer", "load-balancer.yaml"), ("Worker", "worker.yaml")):
        text, variables = url(name)
        assert text.endswith("/${LivePrefix}" + child) and variables == {"LivePrefix": live_prefix}
    worker = resources["Worker"]["Properties"]["Parameters"]
    assert worker["ImageTag"] == {
        "Fn::If": ["BlueIsLive", {"Ref": "BlueImageTag"}, {"Ref": "GreenImageTag"}]
    }
    lb = resources["LoadBalancer"]["Properties"]["Parameters"]
    assert lb["LiveColor"] == {"Ref": "LiveColor"}
    for name in ("BlueTemplatePrefix", "GreenTemplatePrefix", "BlueImageTag", "GreenImageTag"):
        assert lb[name] == {"Ref": name}
    # Sizes travel with a color's template revision, never as release parameters.
    for name in ("BlueService", "GreenService", "Worker"):
        passed = resources[name]["Properties"]["Parameters"]
        assert passed["Environment"] == {"Ref": "Environment"}
        assert not {"Cpu", "Memory", "DesiredCount", "MinCount", "MaxCount"} & set(passed)
    for child in ("web-service.yaml", "worker.yaml"):
        sizes = load(child)["Mappings"]["Sizes"]
        assert set(sizes) == set(load(child)["Parameters"]["Environment"]["AllowedValues"])
    # The service names the swap Lambda and the migrations look for.
    for color in ("blue", "green"):
        name = resources[f"{color.capitalize()}Service"]["Properties"]["Parameters"]["ServiceName"]
        assert name["Fn::Sub"][0] == "${Prefix}-web-" + color


def test_target_groups_are_tagged_with_their_template_revision():
    resources = load("load-balancer.yaml")["Resources"]
    params = load("load-balancer.yaml")["Parameters"]
    for color in ("Blue", "Green"):
        assert params[f"{color}TemplatePrefix"]["Default"] == ""
        tags = {
            t["Key"]: t["Value"] for t in resources[f"{color}TargetGroup"]["Properties"]["Tags"]
        }
        assert tags["templates"] == {"Ref": f"{color}TemplatePrefix"}
        assert tags["image"] == {"Ref": f"{color}ImageTag"}


def test_web_container_health_check_is_readiness_with_circuit_breaker():
    resources = load("web-service.yaml")["Resources"]
    (container,) = resources["TaskDefinition"]["Properties"]["ContainerDefinitions"]
    check = container["HealthCheck"]
    assert check["Command"] == ["CMD", "/usr/local/bin/entrypoint.sh", "healthcheck"]
    assert check["StartPeriod"] >= 60
    breaker = resources["Service"]["Properties"]["DeploymentConfiguration"]
    assert breaker["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}


def statements_of(template: str, role: str) -> list[dict]:
    properties = load(template)["Resources"][role]["Properties"]
    return [s for policy in properties["Policies"] for s in policy["PolicyDocument"]["Statement"]]


def actions_of(statement: dict) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def test_swap_lambda_updates_the_release_stack_and_touches_no_listener():
    template = load("swap-lambda.yaml")
    statements = statements_of("swap-lambda.yaml", "Role")
    granted = {a: s for s in statements for a in actions_of(s)}
    for forbidden in (
        "elasticloadbalancing:ModifyListener",
        "elasticloadbalancing:AddTags",
        "elasticloadbalancing:RemoveTags",
    ):
        assert forbidden not in granted
    stack = RELEASE_STACK_ARN
    for action in (
        "cloudformation:UpdateStack",
        "cloudformation:DescribeStacks",
        "cloudformation:DescribeStackEvents",
    ):
        assert granted[action]["Resource"] == {"Fn::Sub": stack}
    role_arn = "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${Prefix}-release-deploy"
    pass_role = granted["iam:PassRole"]
    assert pass_role["Resource"] == {"Fn::Sub": role_arn}
    assert pass_role["Condition"] == {
        "StringEquals": {"iam:PassedToService": "cloudformation.amazonaws.com"}
    }
    service = ECS + ":service/${ClusterName}/${Prefix}-web-"
    for action in ("ecs:DescribeServices", "ecs:UpdateService"):
        assert granted[action]["Resource"] == [
            {"Fn::Sub": service + "blue"},
            {"Fn::Sub": service + "green"},
        ]
    for action in (
        "elasticloadbalancing:DescribeLoadBalancers",
        "elasticloadbalancing:DescribeListeners",
        "elasticloadbalancing:DescribeTargetGroups",
        "elasticloadbalancing:DescribeTags",
        "elasticloadbalancing:DescribeTargetHealth",
    ):
        assert action in granted
    (function,) = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Lambda::Function"
    ]
    assert function["Timeout"] == 300
    assert function["Environment"]["Variables"] == {
        "LOAD_BALANCER_NAME": {"Ref": "LoadBalancerName"},
        "REPOSITORY_NAME": {"Ref": "RepositoryName"},
        "RELEASE_STACK_NAME": {"Fn::Sub": "${Prefix}-release"},
        "RELEASE_ROLE_ARN": {"Fn::Sub": role_arn},
        "CLUSTER_NAME": {"Ref": "ClusterName"},
        "SERVICE_PREFIX": {"Fn::Sub": "${Prefix}-web"},
    }
    # ... and those names are what pipeline.yaml and root.yaml create.
    pipeline = load("pipeline.yaml")
    deploy_role = pipeline["Resources"]["ReleaseDeployRole"]["Properties"]
    assert deploy_role["RoleName"] == {"Fn::Sub": "${Prefix}-release-deploy"}
    assert pipeline["Outputs"]["ReleaseStackName"]["Value"] == {"Fn::Sub": "${Prefix}-release"}
    deploy, _ = deploy_action()
    assert deploy["Configuration"]["StackName"] == {"Fn::Sub": "${Prefix}-release"}
    root = nested_stacks(load("root.yaml"))
    assert root["SwapLambda"][1]["ClusterName"] == root["Pipeline"][1]["ClusterName"]
    assert root["SwapLambda"][1]["Prefix"] == root["Pipeline"][1]["Prefix"]


def test_discover_can_delete_a_release_stack_whose_first_create_failed():
    """CREATE_UPDATE fails on a stack in ROLLBACK_COMPLETE; Discover deletes it."""
    statements = statements_of("pipeline.yaml", "DiscoverRole")
    (statement,) = [s for s in statements if s.get("Resource") == {"Fn::Sub": RELEASE_STACK_ARN}]
    assert set(actions_of(statement)) == {
        "cloudformation:DescribeStacks",
        "cloudformation:DeleteStack",
    }
    pipeline_role = statements_of("pipeline.yaml", "PipelineRole")
    assert not any("cloudformation:DeleteStack" in actions_of(s) for s in pipeline_role)
