"""Root and children agree: every parameter a root passes exists in the child, every
required child parameter is passed, every output a root reads exists, every value the
release stack imports is exported by the platform root, and the pipeline's deploy action
passes exactly what release.yaml takes."""

import ipaddress
import itertools
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
        # The bake after a swap (tests/infra/test_alarms.py).
        "ALARM_PREFIX": {"Fn::Sub": "${Prefix}-live-"},
        "BAKE_SECONDS": {"Ref": "BakeSeconds"},
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


# --------------------------------------------------------------------------- environments


def resolve(node, template: dict, params: dict):
    """Evaluate the intrinsics a root passes to its children (Ref, Fn::Sub,
    Fn::FindInMap, Fn::If, Fn::Select, Fn::Cidr) as CloudFormation would."""
    if isinstance(node, list):
        return [resolve(item, template, params) for item in node]
    if not isinstance(node, dict):
        return node
    ((function, arg),) = node.items()
    if function == "Ref":
        return params[arg]
    if function == "Fn::Sub":
        text, variables = (arg, {}) if isinstance(arg, str) else arg
        values = {**params, **{k: resolve(v, template, params) for k, v in variables.items()}}
        return re.sub(r"\$\{([\w:]+)\}", lambda m: str(values[m.group(1)]), text)
    if function == "Fn::FindInMap":
        name, top, key = resolve(arg, template, params)
        return template["Mappings"][name][top][key]
    if function == "Fn::If":
        condition, yes, no = arg
        return resolve(
            yes if condition_holds(condition, template, params) else no, template, params
        )
    if function == "Fn::Select":
        index, items = resolve(arg, template, params)
        return items[int(index)]
    if function == "Fn::Cidr":
        block, count, bits = resolve(arg, template, params)
        subnets = ipaddress.ip_network(block).subnets(new_prefix=32 - int(bits))
        return [str(s) for s in itertools.islice(subnets, int(count))]
    raise AssertionError(f"cannot evaluate {function}")


def condition_holds(name: str, template: dict, params: dict) -> bool:
    def holds(node):
        ((function, arg),) = node.items()
        if function == "Fn::Not":
            return not holds(arg[0])
        if function == "Fn::Equals":
            left, right = (resolve(a, template, params) for a in arg)
            return left == right
        if function == "Condition":
            return condition_holds(arg, template, params)
        raise AssertionError(f"cannot evaluate {function}")

    return holds(template["Conditions"][name])


def root_params(environment: str, **given) -> dict:
    defaults = {k: v.get("Default") for k, v in load("root.yaml")["Parameters"].items()}
    return {
        **defaults,
        "Environment": environment,
        "AWS::Region": "eu-central-1",
        "AWS::URLSuffix": "amazonaws.com",
        "ArtifactBucket": "chatsvc-bundle-123456789012-eu-central-1",
        **given,
    }


ENVIRONMENTS = ("dev", "staging", "production")


def test_environments_of_one_account_have_their_own_keys():
    """dev, staging and production may share an account's bucket: each reads its own
    bundle (whose upload starts only its own pipeline), swap Lambda zip and templates."""
    root = load("root.yaml")
    assert not {"BundleKey", "TemplatePrefix", "SwapLambdaKey"} & set(root["Parameters"])
    children = nested_stacks(root)
    seen = set()
    for environment in ENVIRONMENTS:
        params = root_params(environment)
        env_prefix = f"chatsvc/{environment}/"
        for logical_id, resource in root["Resources"].items():
            if resource["Type"] == "AWS::CloudFormation::Stack":
                url = resolve(resource["Properties"]["TemplateURL"], root, params)
                host = "https://chatsvc-bundle-123456789012-eu-central-1.s3.eu-central-1."
                assert url == f"{host}amazonaws.com/{env_prefix}templates/{children[logical_id][0]}"
        pipeline = children["Pipeline"][1]
        keys = {
            "bundle": resolve(pipeline["BundleKey"], root, params),
            "templates": resolve(pipeline["TemplatePrefix"], root, params),
            "lambda": resolve(children["SwapLambda"][1]["SwapLambdaKey"], root, params),
        }
        assert keys == {
            "bundle": env_prefix + "bundle.zip",
            "templates": env_prefix + "templates/",
            "lambda": env_prefix + "swap_lambda.zip",
        }
        assert resolve(root["Outputs"]["BundleLocation"]["Value"], root, params) == (
            f"s3://{params['ArtifactBucket']}/{keys['bundle']}"
        )
        assert not seen & set(keys.values())
        seen |= set(keys.values())
    # The pipeline starts on, and reads, its own bundle only.
    resources = load("pipeline.yaml")["Resources"]
    rule = resources["BundleUploadedRule"]["Properties"]["EventPattern"]["detail"]
    assert rule["object"]["key"] == [{"Ref": "BundleKey"}]
    source = next(
        a
        for stage in resources["Pipeline"]["Properties"]["Stages"]
        for a in stage["Actions"]
        if a["ActionTypeId"]["Provider"] == "S3"
    )
    assert source["Configuration"]["S3ObjectKey"] == {"Ref": "BundleKey"}


def test_bootstrap_bucket_expires_every_environments_published_templates():
    """PublishTemplates writes TemplatePrefix + releases/<build>/; a lifecycle prefix
    has no wildcards, so each environment needs its rule (400 days: a color may stay
    live that long on its revision)."""
    bootstrap = load("bootstrap.yaml")
    params = {"ProjectName": bootstrap["Parameters"]["ProjectName"]["Default"]}
    bucket = bootstrap["Resources"]["Bucket"]["Properties"]
    # The default keeps the bucket's name: no replacement of an existing bucket.
    assert (
        resolve(
            bucket["BucketName"], bootstrap, {**params, "AWS::AccountId": "1", "AWS::Region": "r"}
        )
        == "chatsvc-bundle-1-r"
    )
    assert bucket["NotificationConfiguration"]["EventBridgeConfiguration"] == {
        "EventBridgeEnabled": True
    }
    expiring = {
        resolve(rule["Prefix"], bootstrap, params): rule["ExpirationInDays"]
        for rule in bucket["LifecycleConfiguration"]["Rules"]
        if "Prefix" in rule and "ExpirationInDays" in rule
    }
    publish = load("pipeline.yaml")["Resources"]["PublishTemplatesProject"]["Properties"]
    assert '"${TEMPLATE_PREFIX}releases/' in publish["Source"]["BuildSpec"]
    root = load("root.yaml")
    for environment in ENVIRONMENTS:
        template_prefix = resolve(
            nested_stacks(root)["Pipeline"][1]["TemplatePrefix"], root, root_params(environment)
        )
        assert expiring[template_prefix + "releases/"] == 400, environment
    # Revisions published under the old shared prefix still expire.
    assert expiring["chatsvc/templates/releases/"] == 400


def network_params(environment: str, **given) -> dict:
    root = load("root.yaml")
    passed = nested_stacks(root)["Network"][1]
    return {
        name: resolve(value, root, root_params(environment, **given))
        for name, value in passed.items()
        if "Cidr" in name
    }


def test_each_environment_has_its_own_vpc_range_with_subnets_derived_inside_it():
    ranges = {}
    for environment in ENVIRONMENTS:
        cidrs = network_params(environment)
        vpc = ipaddress.ip_network(cidrs.pop("VpcCidr"))
        subnets = {name: ipaddress.ip_network(cidr) for name, cidr in cidrs.items()}
        assert set(subnets) == {
            "PublicSubnet1Cidr", "PublicSubnet2Cidr", "PrivateSubnet1Cidr", "PrivateSubnet2Cidr",
        }  # fmt: skip
        assert all(s.subnet_of(vpc) for s in subnets.values())
        for a, b in itertools.combinations(subnets.values(), 2):
            assert not a.overlaps(b), (environment, a, b)
        assert {s.prefixlen for n, s in subnets.items() if n.startswith("Public")} == {22}
        assert {s.prefixlen for n, s in subnets.items() if n.startswith("Private")} == {18}
        ranges[environment] = vpc
    assert {k: str(v) for k, v in ranges.items()} == {
        "dev": "10.10.0.0/16",
        "staging": "10.20.0.0/16",
        "production": "10.30.0.0/16",
    }


def test_a_given_vpc_range_keeps_network_yamls_layout():
    """An environment created before the ranges were per environment passes its
    range (VpcCidr=10.40.0.0/16): it must get exactly the subnets it has, or
    CloudFormation would replace them and everything in them."""
    network = load("network.yaml")["Parameters"]
    defaults = {name: spec["Default"] for name, spec in network.items() if "Cidr" in name}
    assert network_params("production", VpcCidr=defaults["VpcCidr"]) == defaults


def test_worker_service_leaves_its_desired_count_to_autoscaling():
    """With DesiredCount in the template, every update of the worker service (each
    swap gives it a new image) reset it to MinCount, dropping a backlog's scale-out.
    Without it CloudFormation starts 1 task on create and keeps the count on update;
    the scalable target keeps it within MinCount..MaxCount."""
    resources = load("worker.yaml")["Resources"]
    assert "DesiredCount" not in resources["Service"]["Properties"]
    target = resources["ScalableTarget"]["Properties"]
    assert target["ScalableDimension"] == "ecs:service:DesiredCount"
    assert target["ResourceId"] == {"Fn::Sub": "service/${ClusterName}/${Service.Name}"}
    for bound, key in (("MinCapacity", "MinCount"), ("MaxCapacity", "MaxCount")):
        assert target[bound] == {"Fn::FindInMap": ["Sizes", {"Ref": "Environment"}, key]}


def test_web_services_leave_their_desired_count_to_autoscaling():
    """An update of a live web service must not cut production back to its minimum."""
    resources = load("web-service.yaml")["Resources"]
    assert "DesiredCount" not in resources["Service"]["Properties"]
    target = resources["ScalableTarget"]["Properties"]
    assert target["MinCapacity"] == {
        "Fn::FindInMap": ["Sizes", {"Ref": "Environment"}, "DesiredCount"]
    }


def test_discover_checks_the_swap_lambda_and_may_invoke_only_it():
    project = load("pipeline.yaml")["Resources"]["DiscoverProject"]["Properties"]
    variables = {v["Name"]: v["Value"] for v in project["Environment"]["EnvironmentVariables"]}
    assert variables["SWAP_FUNCTION_NAME"] == {"Ref": "SwapFunctionName"}
    invoke = [
        s
        for s in statements_of("pipeline.yaml", "DiscoverRole")
        if "lambda:InvokeFunction" in actions_of(s)
    ]
    assert [s["Resource"] for s in invoke] == [{"Ref": "SwapFunctionArn"}]
    buildspec = (TEMPLATES.parent / "pipeline" / "buildspec-discover.yml").read_text()
    assert '--swap-function "$SWAP_FUNCTION_NAME"' in buildspec


# --------------------------------------------------------------------------- promotion

NO_VALUE = object()
STAGING_URI = "222222222222.dkr.ecr.eu-west-1.amazonaws.com/chatsvc-staging"
STAGING_KEY = "arn:aws:kms:eu-west-1:222222222222:key/0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"
PROMOTION_READ = {
    "ecr:DescribeImages",
    "ecr:BatchGetImage",
    "ecr:GetDownloadUrlForLayer",
    "ecr:BatchCheckLayerAvailability",
}


def evaluate(node, template: dict, params: dict):
    """Like resolve(), for policies: also Fn::Split, Fn::Join, Fn::And, AWS::NoValue
    (dropped from lists and mappings); Ref to a resource and Fn::GetAtt stay as they are."""
    params = {"AWS::Partition": "aws", "AWS::Region": "eu-central-1", **params}
    if isinstance(node, list):
        items = [evaluate(item, template, params) for item in node]
        return [item for item in items if item is not NO_VALUE]
    if not isinstance(node, dict):
        return node
    if len(node) != 1 or not next(iter(node)).startswith(("Fn::", "Ref")):
        items = {k: evaluate(v, template, params) for k, v in node.items()}
        return {k: v for k, v in items.items() if v is not NO_VALUE}
    ((function, arg),) = node.items()
    if function == "Ref":
        if arg in template["Resources"]:
            return node
        return NO_VALUE if arg == "AWS::NoValue" else params[arg]
    if function == "Fn::GetAtt":
        return node
    if function == "Fn::Sub":
        text, variables = (arg, {}) if isinstance(arg, str) else arg
        values = {**params, **{k: evaluate(v, template, params) for k, v in variables.items()}}
        return re.sub(r"\$\{([\w:]+)\}", lambda m: str(values[m.group(1)]), text)
    if function == "Fn::Select":
        index, items = evaluate(arg, template, params)
        return items[int(index)]
    if function == "Fn::Split":
        separator, text = evaluate(arg, template, params)
        return text.split(separator)
    if function == "Fn::Join":
        separator, items = evaluate(arg, template, params)
        return separator.join(items)
    if function == "Fn::If":
        condition, yes, no = arg
        chosen = yes if promotion_condition(condition, template, params) else no
        return evaluate(chosen, template, params)
    raise AssertionError(f"cannot evaluate {function}")


def promotion_condition(name: str, template: dict, params: dict) -> bool:
    def holds(node):
        ((function, arg),) = node.items()
        if function == "Fn::Not":
            return not holds(arg[0])
        if function == "Fn::And":
            return all(holds(a) for a in arg)
        if function == "Fn::Equals":
            left, right = (evaluate(a, template, params) for a in arg)
            return left == right
        if function in ("Condition", "Fn::Condition"):  # {"Condition": ...} or !Condition
            return holds(template["Conditions"][arg])
        raise AssertionError(f"cannot evaluate {function}")

    return holds(template["Conditions"][name])


def build_role_statements(**given) -> list[dict]:
    template = load("pipeline.yaml")
    params = {k: v.get("Default", f"<{k}>") for k, v in template["Parameters"].items()}
    params.update(given)
    role = evaluate(template["Resources"]["BuildRole"]["Properties"], template, params)
    return [s for policy in role["Policies"] for s in policy["PolicyDocument"]["Statement"]]


def grants(statements: list[dict], action: str) -> list[dict]:
    return [s for s in statements if action in actions_of(s)]


def test_build_role_reads_the_source_repository_only_when_promoting():
    built_here = build_role_statements()
    assert not any(s.get("Sid", "").startswith("PromoteFrom") for s in built_here)
    # its own repository and key only
    assert [s["Resource"] for s in grants(built_here, "ecr:BatchGetImage")] == ["<RepositoryArn>"]
    assert [s["Resource"] for s in grants(built_here, "kms:Decrypt")] == ["<KmsKeyArn>"]

    for uri, arn in (
        (STAGING_URI, "arn:aws:ecr:eu-west-1:222222222222:repository/chatsvc-staging"),
        (
            "333333333333.dkr.ecr.us-east-2.amazonaws.com/team/chat.svc",
            "arn:aws:ecr:us-east-2:333333333333:repository/team/chat.svc",
        ),
    ):
        promoting = build_role_statements(
            PromoteFromRepositoryUri=uri, PromoteFromKmsKeyArn=STAGING_KEY
        )
        (source,) = [s for s in promoting if s.get("Sid") == "PromoteFromRepository"]
        assert source["Effect"] == "Allow" and source["Resource"] == arn
        assert set(source["Action"]) == PROMOTION_READ  # read only: no push, no delete
        (key,) = [s for s in promoting if s.get("Sid") == "PromoteFromRepositoryKey"]
        assert key["Action"] == "kms:Decrypt" and key["Resource"] == STAGING_KEY
        region = arn.split(":")[3]
        assert key["Condition"] == {
            "StringEquals": {"kms:ViaService": f"ecr.{region}.amazonaws.com"}
        }
        # Everything else is what a build from source gets.
        assert [
            s for s in promoting if not s.get("Sid", "").startswith("PromoteFrom")
        ] == built_here

    # A source repository without a key of its own (AES256): no kms grant.
    no_key = build_role_statements(PromoteFromRepositoryUri=STAGING_URI)
    assert [s.get("Sid") for s in no_key if s.get("Sid")] == ["PromoteFromRepository"]


def test_build_project_is_told_where_to_promote_from():
    pipeline = load("pipeline.yaml")
    project = pipeline["Resources"]["BuildProject"]["Properties"]
    variables = {v["Name"]: v["Value"] for v in project["Environment"]["EnvironmentVariables"]}
    assert variables["PROMOTE_FROM_REPOSITORY_URI"] == {"Ref": "PromoteFromRepositoryUri"}
    for name in ("PromoteFromRepositoryUri", "PromoteFromKmsKeyArn"):
        assert pipeline["Parameters"][name]["Default"] == ""
    buildspec = (ROOT / "pipeline" / "buildspec-build.yml").read_text()
    assert 'PROMOTE_FROM_REPOSITORY_URI="${PROMOTE_FROM_REPOSITORY_URI:-}"' in buildspec


def test_root_wires_promotion_and_checks_its_parameters():
    root = load("root.yaml")
    children = nested_stacks(root)
    pipeline = children["Pipeline"][1]
    for name in ("PromoteFromRepositoryUri", "PromoteFromKmsKeyArn"):
        assert pipeline[name] == {"Ref": name}
        assert root["Parameters"][name]["Default"] == ""
    # The source (staging) side: both its repository and its key know who pulls.
    for stack in ("Repository", "Kms"):
        assert children[stack][1]["PullAccountIds"] == {"Ref": "PullAccountIds"}
    assert root["Parameters"]["PullAccountIds"]["Default"] == ""

    def allowed(name: str, value: str) -> bool:
        return re.fullmatch(root["Parameters"][name]["AllowedPattern"], value) is not None

    assert allowed("PromoteFromRepositoryUri", "") and allowed(
        "PromoteFromRepositoryUri", STAGING_URI
    )
    for bad in (
        "chatsvc-staging",
        "public.ecr.aws/x/y",
        "https://" + STAGING_URI,
        STAGING_URI + ":tag",
    ):
        assert not allowed("PromoteFromRepositoryUri", bad), bad
    assert allowed("PromoteFromKmsKeyArn", STAGING_KEY) and allowed("PromoteFromKmsKeyArn", "")
    assert not allowed(
        "PromoteFromKmsKeyArn", "arn:aws:kms:eu-west-1:222222222222:alias/chatsvc-staging"
    )
    for good in ("", "111111111111", "111111111111,333333333333"):
        assert allowed("PullAccountIds", good), good
    for bad in ("1111", "111111111111, 333333333333", "arn:aws:iam::111111111111:root"):
        assert not allowed("PullAccountIds", bad), bad
    # Promoting from an (always KMS-encrypted) repository needs its key.
    (rule,) = root["Rules"].values()
    assert rule["RuleCondition"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "PromoteFromRepositoryUri"}, ""]}]
    }
    assert rule["Assertions"][0]["Assert"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "PromoteFromKmsKeyArn"}, ""]}]
    }


def rendered(template_name: str, pull_account_ids: str) -> tuple[dict, dict]:
    """(the template, its resources) with PullAccountIds split as CloudFormation
    splits a CommaDelimitedList (empty: [""])."""
    template = load(template_name)
    params = {k: v.get("Default", f"<{k}>") for k, v in template["Parameters"].items()}
    params["PullAccountIds"] = pull_account_ids.split(",")
    params["AWS::AccountId"] = "222222222222"
    params["AWS::Region"] = "eu-west-1"
    return template, evaluate(template["Resources"], template, params)


def test_source_repository_lets_only_the_listed_accounts_pull():
    _, resources = rendered("ecr.yaml", "")
    assert "RepositoryPolicyText" not in resources["Repository"]["Properties"]
    _, resources = rendered("ecr.yaml", "111111111111,333333333333")
    policy = resources["Repository"]["Properties"]["RepositoryPolicyText"]
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"AWS": ["111111111111", "333333333333"]}
    assert set(statement["Action"]) == PROMOTION_READ  # pull, never push or delete


def test_source_key_lets_the_listed_accounts_decrypt_through_ecr_only():
    _, resources = rendered("kms.yaml", "")
    base = resources["Key"]["Properties"]["KeyPolicy"]["Statement"]
    assert not any(s.get("Sid") == "PromotingAccountsPullThroughEcr" for s in base)
    _, resources = rendered("kms.yaml", "111111111111")
    statements = resources["Key"]["Properties"]["KeyPolicy"]["Statement"]
    (pull,) = [s for s in statements if s.get("Sid") == "PromotingAccountsPullThroughEcr"]
    assert statements == [*base, pull]
    assert pull["Effect"] == "Allow" and pull["Principal"] == {"AWS": ["111111111111"]}
    assert pull["Action"] == "kms:Decrypt"
    assert pull["Condition"] == {
        "StringEquals": {
            "kms:ViaService": "ecr.eu-west-1.amazonaws.com",
            "kms:CallerAccount": ["111111111111"],
        }
    }
