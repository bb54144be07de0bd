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
    for tag in ("BlueImageTag", "GreenImageTag"):
        assert overrides[tag] == {"Fn::GetParam": ["DiscoverOutput", "deployment.json", tag]}


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


def test_stage_order():
    pipeline = load("pipeline.yaml")["Resources"]["Pipeline"]["Properties"]
    assert pipeline["PipelineType"] == "V2"
    stages = [s["Name"] for s in pipeline["Stages"]]
    assert stages == [
        "Source",
        "Build",
        "Discover",
        "Deploy",
        "Migrate",
        "SmokeTest",
        "Approval",
        "Swap",
    ]
    providers = {a["ActionTypeId"]["Provider"] for a in pipeline["Stages"][0]["Actions"]}
    assert providers == {"CodeStarSourceConnection", "S3"}


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
        if resources[name]["Type"].endswith("Ingress")
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
