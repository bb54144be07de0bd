"""Buildspecs: parsed and checked for what the pipeline and the templates expect,
and the build and discover buildspecs run as CodeBuild would (one bash shell for
all commands, from the bundle that pipeline/package.py makes, the commit as a
secondary source) against moto's server, with docker and the aws CLI stubbed."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
import uuid
import zipfile
from pathlib import Path

import boto3
import pytest
import yaml

from pipeline import package

pytestmark = pytest.mark.infra
ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / "pipeline"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
REGION = "us-east-1"
DEFAULT_BASE = "public.ecr.aws/docker/library/python:3.11-slim-bookworm"
PIN = DEFAULT_BASE + "@sha256:" + "c" * 64


def load(name: str) -> dict:
    return yaml.safe_load((PIPELINE / name).read_text())


def commands(spec: dict, *phases: str) -> list[str]:
    phases = phases or tuple(spec["phases"])
    return [c for p in phases for c in spec["phases"].get(p, {}).get("commands", [])]


def index_of(cmds: list[str], needle: str) -> int:
    return next(i for i, c in enumerate(cmds) if needle in c)


@pytest.mark.parametrize(
    "name", ["buildspec-build.yml", "buildspec-discover.yml", "buildspec-migrate.yml",
             "buildspec-smoke.yml"],
)  # fmt: skip
def test_common_shape(name):
    spec = load(name)
    assert str(spec["version"]) == "0.2"
    assert spec["env"]["shell"] == "bash"  # ${VAR%%/*} and the like
    assert "build" in spec["phases"]
    assert spec["phases"]["build"].get("on-failure") == "ABORT"
    install = commands(spec, "install")
    assert any("pip install" in c and "-r pipeline/requirements.txt" in c for c in install)


def test_requirements_are_pinned_and_cover_the_programs():
    lines = [
        line.strip()
        for line in (PIPELINE / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert all("==" in line for line in lines)
    names = {line.split("==")[0].lower() for line in lines}
    assert {"boto3", "websockets"} <= names


def test_build_buildspec():
    spec = load("buildspec-build.yml")
    cmds = commands(spec)
    login = cmds[index_of(cmds, "get-login-password")]
    assert "docker login --username AWS --password-stdin" in login
    build = next(line for c in cmds for line in c.splitlines() if "docker build " in line).strip()
    # The commit (the secondary source) is the build context and nothing else.
    assert '--file "$APP_SRC/docker/Dockerfile"' in build and build.endswith(' "$APP_SRC"')
    assert 'export APP_SRC="${CODEBUILD_SRC_DIR_SourceCode:-}"' in cmds
    assert '--tag "$ECR_REPOSITORY_URI:$TAG"' in build
    # The tag is the commit's, from the pipeline's variable: CodeBuild's resolved
    # source version names the primary source, the bundle.
    assert "cut -c1-12" in cmds[index_of(cmds, 'TAG="$(echo "$SOURCE_COMMIT"')]
    assert "CODEBUILD_RESOLVED_SOURCE_VERSION" not in "\n".join(cmds)
    gate = cmds[index_of(cmds, "pipeline.scan_gate")]
    assert '--repository "$ECR_REPOSITORY_NAME"' in gate and '--tag "$TAG"' in gate
    assert "--allowlist pipeline/scan-allowlist.json" in gate
    # push, then the gate, then (only if it passed) the artifact
    assert index_of(cmds, "docker push") < index_of(cmds, "pipeline.scan_gate")
    assert index_of(cmds, "pipeline.scan_gate") < index_of(cmds, "image.json")
    assert spec["artifacts"]["files"] == ["image.json"]


def test_discover_buildspec():
    spec = load("buildspec-discover.yml")
    cmd = commands(spec)[index_of(commands(spec), "pipeline.deployment_tags")]
    assert '--load-balancer "$LOAD_BALANCER_NAME"' in cmd
    assert '"$CODEBUILD_SRC_DIR_BuildOutput/image.json"' in cmd
    assert '--templates-json "$CODEBUILD_SRC_DIR_TemplatesOutput/templates.json"' in cmd
    assert "--out deployment.json" in cmd
    assert spec["artifacts"]["files"] == ["deployment.json"]


def test_migrate_buildspec():
    spec = load("buildspec-migrate.yml")
    cmd = commands(spec)[index_of(commands(spec), "pipeline.run_migrations")]
    for part in (
        '--cluster "$CLUSTER"',
        '--service-prefix "$SERVICE_PREFIX"',
        '"$CODEBUILD_SRC_DIR_DiscoverOutput/deployment.json"',
        '--subnets "$SUBNETS"',
        '--security-groups "$SECURITY_GROUPS"',
        "--container web",
        "--command migrate",
    ):
        assert part in cmd


def test_smoke_buildspec():
    spec = load("buildspec-smoke.yml")
    cmd = commands(spec)[index_of(commands(spec), "pipeline.smoke_test")]
    assert '--url "$SMOKE_URL"' in cmd and '--api-key "$SMOKE_API_KEY"' in cmd
    # the key is never written into the buildspec; the project takes it from Secrets Manager
    assert "SMOKE_API_KEY" not in spec["env"].get("variables", {})


# --------------------------------------------------------------------------- the templates


class CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !Sub ...) kept as plain values."""


CfnLoader.add_multi_constructor(
    "!",
    lambda loader, suffix, node: (
        loader.construct_scalar(node)
        if isinstance(node, yaml.ScalarNode)
        else loader.construct_sequence(node)
        if isinstance(node, yaml.SequenceNode)
        else loader.construct_mapping(node)
    ),
)

BUILTIN = {"AWS_DEFAULT_REGION", "TAG", "REGISTRY"}


def template(name: str) -> dict:
    path = ROOT / "cloudformation" / name
    if not path.exists():
        pytest.fail(f"cloudformation/{name} is missing")
    return yaml.load(path.read_text(), Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass


def projects() -> dict[str, dict]:
    """BuildSpec path -> the CodeBuild project's properties."""
    resources = template("pipeline.yaml")["Resources"]
    found = {}
    for resource in resources.values():
        if resource["Type"] == "AWS::CodeBuild::Project":
            props = resource["Properties"]
            found[props["Source"].get("BuildSpec", "")] = props
    return found


def actions() -> list[dict]:
    stages = template("pipeline.yaml")["Resources"]
    pipeline = next(r for r in stages.values() if r["Type"] == "AWS::CodePipeline::Pipeline")
    return [a for stage in pipeline["Properties"]["Stages"] for a in stage["Actions"]]


def action_for(buildspec: str) -> dict:
    """The pipeline action that runs the project whose buildspec this is."""
    resources = template("pipeline.yaml")["Resources"]
    logical = next(
        name
        for name, r in resources.items()
        if r["Type"] == "AWS::CodeBuild::Project"
        and r["Properties"]["Source"].get("BuildSpec") == buildspec
    )
    return next(a for a in actions() if a["Configuration"].get("ProjectName") == logical)


@pytest.mark.parametrize(
    "name", ["buildspec-build.yml", "buildspec-discover.yml", "buildspec-migrate.yml",
             "buildspec-smoke.yml"],
)  # fmt: skip
def test_every_variable_a_buildspec_requires_is_provided(name):
    spec = load(name)
    required = set(re.findall(r"\$\{(\w+):\?", "\n".join(commands(spec))))
    project = projects()[f"pipeline/{name}"]
    provided = {v["Name"] for v in project["Environment"].get("EnvironmentVariables", [])}
    action_env = action_for(f"pipeline/{name}")["Configuration"].get("EnvironmentVariables")
    if action_env:
        provided |= {v["name"] for v in json.loads(action_env)}
    assert required, name
    assert required - BUILTIN <= provided, f"{name}: not provided: {required - BUILTIN - provided}"


def test_build_runs_the_bundles_buildspec_with_the_commit_as_context_only():
    """A commit must not be able to edit its own gate: the Build action's primary
    source (where CodeBuild reads the buildspec and runs it) is the operator-uploaded
    bundle; the commit is a secondary input, and its id comes from the Code action."""
    build = action_for("pipeline/buildspec-build.yml")
    assert build["Configuration"]["PrimarySource"] == "SourceBundle"
    assert [a["Name"] for a in build["InputArtifacts"]] == ["SourceBundle", "SourceCode"]
    (variable,) = json.loads(build["Configuration"]["EnvironmentVariables"])
    assert variable == {
        "name": "SOURCE_COMMIT", "value": "#{SourceVariables.CommitId}", "type": "PLAINTEXT",
    }  # fmt: skip
    code, bundle = (
        next(a for a in actions() if a["ActionTypeId"]["Provider"] == provider)
        for provider in ("CodeStarSourceConnection", "S3")
    )
    assert code["Namespace"] == "SourceVariables"
    assert [a["Name"] for a in code["OutputArtifacts"]] == ["SourceCode"]
    assert [a["Name"] for a in bundle["OutputArtifacts"]] == ["SourceBundle"]
    # Every buildspec that pipeline.yaml names runs from the bundle.
    for path in projects():
        if path.startswith("pipeline/"):
            action = action_for(path)
            inputs = [a["Name"] for a in action["InputArtifacts"]]
            assert action["Configuration"].get("PrimarySource", inputs[0]) == "SourceBundle", path


def test_secondary_artifacts_match_the_pipeline():
    build = action_for("pipeline/buildspec-build.yml")
    assert [a["Name"] for a in build["OutputArtifacts"]] == ["BuildOutput"]
    discover = action_for("pipeline/buildspec-discover.yml")
    assert {"BuildOutput", "TemplatesOutput"} <= {a["Name"] for a in discover["InputArtifacts"]}
    assert [a["Name"] for a in discover["OutputArtifacts"]] == ["DiscoverOutput"]
    # TemplatesOutput comes from an earlier action of the same stage.
    publish = next(
        a
        for a in actions()
        if [o["Name"] for o in a.get("OutputArtifacts", [])] == ["TemplatesOutput"]
    )
    assert publish.get("RunOrder", 1) < discover.get("RunOrder", 1)
    migrate = action_for("pipeline/buildspec-migrate.yml")
    assert "DiscoverOutput" in [a["Name"] for a in migrate["InputArtifacts"]]


def test_smoke_project_takes_the_api_key_from_secrets_manager():
    project = projects()["pipeline/buildspec-smoke.yml"]
    env = {v["Name"]: v for v in project["Environment"]["EnvironmentVariables"]}
    assert env["SMOKE_API_KEY"]["Type"] == "SECRETS_MANAGER"


def test_deploy_parameters_read_keys_that_deployment_json_has():
    from pipeline.deployment_tags import KEYS

    text = (ROOT / "cloudformation" / "pipeline.yaml").read_text()
    used = set(re.findall(r'"DiscoverOutput", "deployment.json", "(\w+)"', text))
    assert used, "the deploy action reads nothing from deployment.json?"
    assert used <= set(KEYS)


@pytest.mark.parametrize("environment", package.ENVIRONMENTS)
def test_swap_lambda_and_bundle_keys_match_the_templates(environment):
    """package.py uploads to the keys root.yaml derives for the environment."""
    root = template("root.yaml")["Resources"]
    names = {"ProjectName": "chatsvc", "Environment": environment}

    def render(text: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: names[m.group(1)], text)

    keys = package.keys(environment)
    assert render(root["SwapLambda"]["Properties"]["Parameters"]["SwapLambdaKey"]) == keys["lambda"]
    pipeline = root["Pipeline"]["Properties"]["Parameters"]
    assert render(pipeline["BundleKey"]) == keys["bundle"]
    assert render(pipeline["TemplatePrefix"]) == keys["templates"]
    assert keys["bundle"] == f"chatsvc/{environment}/bundle.zip"

    lam = template("swap-lambda.yaml")
    function = next(
        r["Properties"] for r in lam["Resources"].values() if r["Type"] == "AWS::Lambda::Function"
    )
    assert function["Handler"] == "swap_lambda.handler"
    assert function["Runtime"] == "python3.12"
    # The Lambda's environment is exactly what swap_lambda.py reads.
    source = (PIPELINE / "swap_lambda.py").read_text()
    read = set(re.findall(r"os\.environ(?:\.get\(|\[)\"(\w+)\"", source))
    assert read and set(function["Environment"]["Variables"]) == read
    swap = next(a for a in actions() if a["ActionTypeId"]["Provider"] == "Lambda")
    assert "load_balancer" in json.loads(swap["Configuration"]["UserParameters"])


# --------------------------------------------------------------------------- running them


def codebuild(
    spec_name: str, workdir: Path, env: dict, skip=("install",)
) -> subprocess.CompletedProcess:
    """Run a buildspec's commands like CodeBuild 0.2: one bash, phases in order."""
    spec = load(spec_name)
    script = ["set -e"]
    for phase in ("install", "pre_build", "build", "post_build"):
        if phase in spec["phases"] and phase not in skip:
            script += spec["phases"][phase].get("commands", [])
    return subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


DOCKER_STUB = """\
#!/usr/bin/env bash
# docker, as far as the build buildspec uses it; pushes land in the emulated ECR.
echo "docker $*" >> "$STUB_LOG"
case "$1" in
  login) [ "$(cat)" = "fake-ecr-password" ] || { echo "bad password" >&2; exit 1; } ;;
  build) # --file must exist and the context (the last argument) be a directory
    file=""; prev=""; for arg in "$@"; do [ "$prev" = "--file" ] && file="$arg"; prev="$arg"; done
    [ -f "$file" ] && [ -d "$prev" ] || { echo "no $file or context $prev" >&2; exit 1; } ;;
  push) python3 - "$2" <<'PY'
import json, sys, boto3
uri, tag = sys.argv[1].rsplit(":", 1)
repo = uri.split("/", 1)[1]
ecr = boto3.client("ecr")
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"digest": "sha256:" + "b" * 64, "size": 1, "mediaType": "x"}, "layers": []}
ecr.put_image(repositoryName=repo, imageManifest=json.dumps(manifest), imageTag=tag)
ecr.start_image_scan(repositoryName=repo, imageId={"imageTag": tag})  # scan on push
PY
  ;;
  buildx) # imagetools create --tag DEST SOURCE@DIGEST: copy the manifest, keep the digest
    [ "$2 $3 $4 $#" = "imagetools create --tag 6" ] || { echo "unexpected docker $*" >&2; exit 1; }
    for registry in "${5%%/*}" "${6%%/*}"; do  # logged in to both registries
      grep -qx "docker login --username AWS --password-stdin $registry" "$STUB_LOG" \
        || { echo "not logged in to $registry" >&2; exit 1; }
    done
    python3 - "$5" "$6" <<'PY'
import sys, boto3
dest, source = sys.argv[1:]
source_uri, digest = source.split("@")
host, repo = source_uri.split("/", 1)
account, region = host.split(".")[0], host.split(".")[3]
(image,) = boto3.client("ecr", region_name=region).batch_get_image(
    registryId=account, repositoryName=repo, imageIds=[{"imageDigest": digest}])["images"]
dest_uri, tag = dest.rsplit(":", 1)
dest_host, dest_repo = dest_uri.split("/", 1)
ecr = boto3.client("ecr", region_name=dest_host.split(".")[3])
ecr.put_image(repositoryName=dest_repo, imageManifest=image["imageManifest"], imageTag=tag,
              imageDigest=digest)
ecr.start_image_scan(repositoryName=dest_repo, imageId={"imageTag": tag})  # scan on push
PY
  ;;
  *) echo "unexpected docker $*" >&2; exit 1 ;;
esac
"""

AWS_STUB = """\
#!/usr/bin/env bash
echo "aws $*" >> "$STUB_LOG"
[ "$1 $2" = "ecr get-login-password" ] && { echo fake-ecr-password; exit 0; }
echo "unexpected aws $*" >&2; exit 1
"""


def hostile_commit(code: Path) -> None:
    """A commit that tries to wave itself through: its own gate always passes, its
    allowlist excuses everything, its base-image pin points elsewhere."""
    (code / "docker").mkdir(parents=True)
    shutil.copy(ROOT / "docker" / "Dockerfile", code / "docker" / "Dockerfile")
    (code / "pipeline").mkdir()
    (code / "pipeline" / "__init__.py").write_text("")
    (code / "pipeline" / "scan_gate.py").write_text("print('PASSED (the commit says so)')\n")
    (code / "pipeline" / "scan-allowlist.json").write_text(
        json.dumps(
            [{"id": "CVE-2024-9999", "reason": "the commit says so", "expires": "2999-12-31"}]
        )
    )
    (code / "pipeline" / "base-image.txt").write_text(
        "evil.example/python@sha256:" + "e" * 64 + "\n"
    )
    (code / "pipeline" / "buildspec-build.yml").write_text("version: 0.2\n")


@pytest.fixture
def sandbox(tmp_path, moto_endpoint):
    """CodeBuild's two source dirs: the primary one is the bundle pipeline/package.py
    makes (unzipped), SourceCode a commit's checkout; stubs first on PATH."""
    src = tmp_path / "src"
    zipfile.ZipFile(io.BytesIO(package.build_bundle(ROOT))).extractall(src)
    code = tmp_path / "SourceCode"
    hostile_commit(code)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("docker", DOCKER_STUB), ("aws", AWS_STUB)):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(0o755)
    (bin_dir / "python3").symlink_to(sys.executable)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_ACCOUNT_ID": "123456789012",
        # For CodePipeline, CodeBuild's resolved version is the primary source's (the
        # bundle's S3 object version): the tag must not come from it.
        "CODEBUILD_RESOLVED_SOURCE_VERSION": "3HL4kqtJlcpXroDTDmJ-rmSpXd3dIbrHY",
        "CODEBUILD_SRC_DIR": str(src),
        "CODEBUILD_SRC_DIR_SourceCode": str(code),
        "SOURCE_COMMIT": COMMIT,
        "STUB_LOG": str(tmp_path / "stub.log"),
    }
    return src, env


def new_repository(endpoint: str) -> str:
    name = f"chatsvc-{uuid.uuid4().hex[:8]}"
    boto3.client("ecr", region_name=REGION, endpoint_url=endpoint).create_repository(
        repositoryName=name
    )
    return name


def set_scan_result(endpoint: str, repo: str, findings: list, counts: dict) -> None:
    result = {
        "registryId": "123456789012",
        "repositoryName": repo,
        "imageId": {"imageTag": COMMIT[:12]},
        "imageScanStatus": {"status": "COMPLETE", "description": "done"},
        "imageScanFindings": {"findings": findings, "findingSeverityCounts": counts},
    }
    request = urllib.request.Request(  # noqa: S310 - loopback moto
        f"{endpoint}/moto-api/static/ecr/scan-finding-results",
        data=json.dumps({"results": [result], "region": REGION}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).close()  # noqa: S310 - loopback moto


def build_env(env: dict, repo: str) -> dict:
    uri = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/{repo}"
    return {**env, "ECR_REPOSITORY_URI": uri, "ECR_REPOSITORY_NAME": repo}


@pytest.mark.integration
def test_build_buildspec_runs_and_names_the_image(sandbox, moto_endpoint):
    src, env = sandbox
    repo = new_repository(moto_endpoint)
    set_scan_result(moto_endpoint, repo, [], {})
    result = codebuild("buildspec-build.yml", src, build_env(env, repo))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASSED" in result.stdout
    image = json.loads((src / "image.json").read_text())
    uri = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/{repo}"
    (pushed,) = boto3.client("ecr", region_name=REGION, endpoint_url=moto_endpoint).describe_images(
        repositoryName=repo
    )["imageDetails"]
    assert image == {
        "repository": repo, "tag": COMMIT[:12], "uri": f"{uri}:{COMMIT[:12]}",
        "digest": pushed["imageDigest"], "promoted_from": None,
    }  # fmt: skip
    assert "mode: build from source" in result.stdout
    log = Path(env["STUB_LOG"]).read_text().splitlines()
    registry = f"123456789012.dkr.ecr.{REGION}.amazonaws.com"
    assert set(log[:2]) == {  # the two ends of one pipe: either may log first
        f"aws ecr get-login-password --region {REGION}",
        f"docker login --username AWS --password-stdin {registry}",
    }
    code = env["CODEBUILD_SRC_DIR_SourceCode"]
    assert log[2].startswith(
        f"docker build --file {code}/docker/Dockerfile --tag {uri}:{COMMIT[:12]}"
    )
    assert log[2].endswith(f" {code}")  # the commit is the build context
    assert f"org.opencontainers.image.revision={COMMIT}" in log[2]
    assert log[3] == f"docker push {uri}:{COMMIT[:12]}"
    # No pin in the bundle: the Dockerfile's default, and the log says which.
    assert "--build-arg" not in log[2] and "evil.example" not in log[2]
    assert f"org.opencontainers.image.base.name={DEFAULT_BASE}" in log[2]
    assert f"base image: {DEFAULT_BASE} (the Dockerfile's default, not pinned" in result.stdout


@pytest.mark.integration
def test_a_commit_cannot_weaken_its_own_scan_gate(sandbox, moto_endpoint):
    """The commit's own scan_gate.py and allowlist (hostile_commit) would pass this
    CRITICAL finding; the bundle's gate and allowlist run, and fail it."""
    src, env = sandbox
    repo = new_repository(moto_endpoint)
    finding = {"name": "CVE-2024-9999", "severity": "CRITICAL", "attributes": []}
    set_scan_result(moto_endpoint, repo, [finding], {"CRITICAL": 1})
    result = codebuild("buildspec-build.yml", src, build_env(env, repo))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "CVE-2024-9999" in result.stdout and "the commit says so" not in result.stdout
    assert not (src / "image.json").exists()
    # ... whereas the bundle's allowlist does excuse it: an operator's upload decides.
    (src / "pipeline" / "scan-allowlist.json").write_text(
        json.dumps(
            [{"id": "CVE-2024-9999", "reason": "reviewed: not reachable", "expires": "2999-12-31"}]
        )
    )
    again = codebuild("buildspec-build.yml", src, build_env(env, repo))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "PASSED" in again.stdout and "the commit says so" not in again.stdout


@pytest.mark.integration
def test_the_bundles_base_image_pin_is_passed_to_docker(sandbox, moto_endpoint):
    src, env = sandbox
    pin_file = src / "pipeline" / "base-image.txt"
    pin_file.write_text(pin_file.read_text() + PIN + "\n")
    repo = new_repository(moto_endpoint)
    set_scan_result(moto_endpoint, repo, [], {})
    result = codebuild("buildspec-build.yml", src, build_env(env, repo))
    assert result.returncode == 0, result.stdout + result.stderr
    (build,) = [
        line for line in Path(env["STUB_LOG"]).read_text().splitlines() if "docker build" in line
    ]
    assert f"--build-arg PYTHON_IMAGE={PIN} " in build
    assert f"org.opencontainers.image.base.name={PIN}" in build
    assert f"base image: {PIN} (pinned by the bundle's pipeline/base-image.txt)" in result.stdout


@pytest.mark.parametrize(
    "pin",
    [DEFAULT_BASE, DEFAULT_BASE + "@sha256:abc", f"{PIN}\n{PIN}", "python@sha256:" + "C" * 64],
    ids=["tag-only", "short-digest", "two-lines", "uppercase-digest"],
)
def test_a_malformed_base_image_pin_fails_before_building(sandbox, pin):
    src, env = sandbox
    (src / "pipeline" / "base-image.txt").write_text(f"# pinned\n{pin}\n")
    result = codebuild("buildspec-build.yml", src, build_env(env, "chatsvc-unused"))
    assert result.returncode == 1
    assert "pipeline/base-image.txt: expected one line IMAGE@sha256:" in result.stdout
    assert not Path(env["STUB_LOG"]).exists()  # not even logged in to ECR


def test_the_shipped_base_image_file_pins_nothing_yet_and_says_how():
    """No digest can be looked up here: the file ships commented out, with the recipe."""
    text = (PIPELINE / "base-image.txt").read_text()
    assert [line for line in text.splitlines() if line.strip() and not line.startswith("#")] == []
    assert "docker buildx imagetools inspect " + DEFAULT_BASE in text
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert f"ARG PYTHON_IMAGE={DEFAULT_BASE}\n" in dockerfile


@pytest.mark.integration
def test_a_second_build_of_a_commit_reuses_its_image_and_still_gates(sandbox, moto_endpoint):
    """ECR tags are immutable: a retry, bundle upload or promotion must not push again."""
    src, env = sandbox
    repo = new_repository(moto_endpoint)
    set_scan_result(moto_endpoint, repo, [], {})
    assert codebuild("buildspec-build.yml", src, build_env(env, repo)).returncode == 0
    (src / "image.json").unlink()
    Path(env["STUB_LOG"]).unlink()

    again = codebuild("buildspec-build.yml", src, build_env(env, repo))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "is in ECR already (immutable tag)" in again.stdout and "PASSED" in again.stdout
    log = Path(env["STUB_LOG"]).read_text()
    assert "docker build" not in log and "docker push" not in log
    assert json.loads((src / "image.json").read_text())["tag"] == COMMIT[:12]


@pytest.mark.integration
def test_build_buildspec_fails_on_findings_and_writes_no_artifact(sandbox, moto_endpoint):
    src, env = sandbox
    repo = new_repository(moto_endpoint)
    finding = {"name": "CVE-2024-9999", "severity": "CRITICAL", "attributes": []}
    set_scan_result(moto_endpoint, repo, [finding], {"CRITICAL": 1})
    result = codebuild("buildspec-build.yml", src, build_env(env, repo))
    assert result.returncode == 1
    assert "CVE-2024-9999" in result.stdout
    assert not (src / "image.json").exists()


def test_build_buildspec_fails_without_its_environment(sandbox):
    src, env = sandbox
    result = codebuild("buildspec-build.yml", src, env)
    assert result.returncode != 0
    assert "ECR_REPOSITORY_URI: is not set" in result.stderr
    assert not Path(env["STUB_LOG"]).exists()


@pytest.mark.parametrize("missing", ["SOURCE_COMMIT", "CODEBUILD_SRC_DIR_SourceCode"])
def test_build_buildspec_fails_without_the_commit(sandbox, missing):
    src, env = sandbox
    env = build_env({k: v for k, v in env.items() if k != missing}, "chatsvc-unused")
    result = codebuild("buildspec-build.yml", src, env)
    assert result.returncode != 0
    assert missing in result.stdout + result.stderr
    assert not Path(env["STUB_LOG"]).exists()


@pytest.mark.integration
def test_discover_buildspec_runs_on_a_first_deployment(sandbox, tmp_path):
    src, env = sandbox
    build_output = tmp_path / "BuildOutput"
    build_output.mkdir()
    (build_output / "image.json").write_text(
        json.dumps({"repository": "chatsvc", "tag": COMMIT[:12], "uri": f"x:{COMMIT[:12]}"})
    )
    templates_output = tmp_path / "TemplatesOutput"
    templates_output.mkdir()
    prefix = "chatsvc/templates/releases/0123-run/"
    (templates_output / "templates.json").write_text(json.dumps({"TemplatePrefix": prefix}))
    env = {
        **env,
        "LOAD_BALANCER_NAME": f"absent-{uuid.uuid4().hex[:8]}",
        "RELEASE_STACK_NAME": f"absent-{uuid.uuid4().hex[:8]}-release",
        "CODEBUILD_SRC_DIR_BuildOutput": str(build_output),
        "CODEBUILD_SRC_DIR_TemplatesOutput": str(templates_output),
    }
    result = codebuild("buildspec-discover.yml", src, env)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((src / "deployment.json").read_text())
    assert data["FirstDeployment"] == "true"
    assert data["TestImageTag"] == data["BlueImageTag"] == COMMIT[:12]
    # First deployment: both colors get this run's templates.
    assert data["BlueTemplatePrefix"] == data["GreenTemplatePrefix"] == prefix


def test_buildspec_text_has_no_tabs():
    for path in PIPELINE.glob("buildspec-*.yml"):
        assert "\t" not in path.read_text(), path


# --------------------------------------------------------------------------- promotion
# The source environment (staging) is another account in another region: moto
# keeps a repository created with registryId=SOURCE_ACCOUNT apart (describe-images
# without that registry id does not find it), so the build must pass the account
# and region it reads from the URI.

SOURCE_ACCOUNT, SOURCE_REGION = "222222222222", "eu-west-1"
TAG = COMMIT[:12]


def manifest(layer: str) -> str:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"digest": "sha256:" + "a" * 64, "size": 1, "mediaType": "x"},
            "layers": [{"digest": "sha256:" + layer * 64, "size": 1, "mediaType": "x"}],
        }
    )


def source_repository(endpoint: str, *, promoted: bool, layer: str = "1") -> tuple[str, str]:
    """Staging's repository with the commit's image (tagged promoted-<tag> by its
    swap, as swap_lambda.mark_promoted does, if promoted): (its URI, the digest)."""
    ecr = boto3.client("ecr", region_name=SOURCE_REGION, endpoint_url=endpoint)
    name = f"chatsvc-staging-{uuid.uuid4().hex[:8]}"
    uri = ecr.create_repository(repositoryName=name, registryId=SOURCE_ACCOUNT)["repository"][
        "repositoryUri"
    ]
    assert uri == f"{SOURCE_ACCOUNT}.dkr.ecr.{SOURCE_REGION}.amazonaws.com/{name}"
    image = ecr.put_image(
        repositoryName=name, registryId=SOURCE_ACCOUNT, imageManifest=manifest(layer), imageTag=TAG
    )["image"]
    if promoted:
        ecr.put_image(
            repositoryName=name, registryId=SOURCE_ACCOUNT, imageManifest=manifest(layer),
            imageTag=f"promoted-{TAG}",
        )  # fmt: skip
    return uri, image["imageId"]["imageDigest"]


def images_in(endpoint: str, repo: str) -> list[dict]:
    ecr = boto3.client("ecr", region_name=REGION, endpoint_url=endpoint)
    return ecr.describe_images(repositoryName=repo)["imageDetails"]


def test_build_buildspec_promotes_by_digest():
    cmds = commands(load("buildspec-build.yml"))
    text = "\n".join(cmds)
    copy = next(line for c in cmds for line in c.splitlines() if "imagetools create" in line)
    assert (
        'docker buildx imagetools create --tag "$ECR_REPOSITORY_URI:$TAG" '
        '"$PROMOTE_FROM_REPOSITORY_URI@$SOURCE_DIGEST"'
    ) in copy
    assert 'registryId=os.environ["SOURCE_REGISTRY_ID"]' in text
    assert 'region_name=os.environ["SOURCE_REGION"]' in text
    assert 'promoted = f"promoted-{tag}"' in text
    # look up and require the source, then the tag-exists check, then the copy, the
    # digest check, the gate, the artifact
    lookup = index_of(cmds, "PROMOTION REFUSED: {ref} does not exist")
    assert lookup < index_of(cmds, "imagetools create") < index_of(cmds, "promotion: verified")
    assert index_of(cmds, "promotion: verified") < index_of(cmds, "pipeline.scan_gate")
    login = cmds[index_of(cmds, 'get-login-password --region "$SOURCE_REGION"')]
    assert 'docker login --username AWS --password-stdin "$SOURCE_REGISTRY"' in login


@pytest.mark.integration
def test_promotion_copies_a_release_that_went_live_in_staging_by_digest(sandbox, moto_endpoint):
    src, env = sandbox
    source_uri, digest = source_repository(moto_endpoint, promoted=True)
    repo = new_repository(moto_endpoint)
    set_scan_result(moto_endpoint, repo, [], {})
    env = {**build_env(env, repo), "PROMOTE_FROM_REPOSITORY_URI": source_uri}
    result = codebuild("buildspec-build.yml", src, env)
    assert result.returncode == 0, result.stdout + result.stderr

    uri = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/{repo}"
    log = Path(env["STUB_LOG"]).read_text().splitlines()
    assert f"aws ecr get-login-password --region {SOURCE_REGION}" in log
    assert f"docker login --username AWS --password-stdin {source_uri.split('/')[0]}" in log
    assert f"docker buildx imagetools create --tag {uri}:{TAG} {source_uri}@{digest}" in log
    assert not any(line.startswith(("docker build ", "docker push")) for line in log)
    # The copy is in this repository, under the tag, with the source's digest.
    (copied,) = images_in(moto_endpoint, repo)
    assert copied["imageTags"] == [TAG] and copied["imageDigest"] == digest
    for step in (
        f"promotion: {source_uri}:{TAG} carries promoted-{TAG}",
        f"promotion: copying {source_uri}@{digest} to {uri}:{TAG} by digest (no build)",
        f"promotion: verified: {uri}:{TAG} is {digest}",
        "PASSED",  # production's own gate ran
    ):
        assert step in result.stdout, step
    image = json.loads((src / "image.json").read_text())
    assert image == {
        "repository": repo, "tag": TAG, "uri": f"{uri}:{TAG}", "digest": digest,
        "promoted_from": f"{source_uri}@{digest}",
    }  # fmt: skip

    # A retry finds the copy: no second copy, still verified and gated.
    (src / "image.json").unlink()
    Path(env["STUB_LOG"]).unlink()
    again = codebuild("buildspec-build.yml", src, env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"is in ECR already (immutable tag) with the source's digest {digest}" in again.stdout
    assert "imagetools" not in Path(env["STUB_LOG"]).read_text()
    assert "promotion: verified" in again.stdout and "PASSED" in again.stdout
    assert json.loads((src / "image.json").read_text())["digest"] == digest


@pytest.mark.integration
def test_promotion_gates_the_copy_with_this_environments_gate(sandbox, moto_endpoint):
    src, env = sandbox
    source_uri, _ = source_repository(moto_endpoint, promoted=True)
    repo = new_repository(moto_endpoint)
    finding = {"name": "CVE-2024-9999", "severity": "CRITICAL", "attributes": []}
    set_scan_result(moto_endpoint, repo, [finding], {"CRITICAL": 1})
    env = {**build_env(env, repo), "PROMOTE_FROM_REPOSITORY_URI": source_uri}
    result = codebuild("buildspec-build.yml", src, env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "promotion: verified" in result.stdout and "CVE-2024-9999" in result.stdout
    assert not (src / "image.json").exists()


@pytest.mark.integration
@pytest.mark.parametrize("state", ["not-promoted", "absent"])
def test_promotion_refuses_what_never_went_live_in_staging(sandbox, moto_endpoint, state):
    src, env = sandbox
    source_uri, digest = source_repository(moto_endpoint, promoted=False)
    if state == "absent":  # another commit was built there, not this one
        env = {**env, "SOURCE_COMMIT": "fedcba9876543210fedcba9876543210fedcba98"}
    repo = new_repository(moto_endpoint)
    env = {**build_env(env, repo), "PROMOTE_FROM_REPOSITORY_URI": source_uri}
    result = codebuild("buildspec-build.yml", src, env)
    assert result.returncode == 1, result.stdout + result.stderr
    tag = env["SOURCE_COMMIT"][:12]
    if state == "not-promoted":
        assert (
            f"PROMOTION REFUSED: {source_uri}:{tag} ({digest}) does not carry promoted-{tag}: "
            "it never went live in the source environment"
        ) in result.stdout
    else:
        assert f"PROMOTION REFUSED: {source_uri}:{tag} does not exist" in result.stdout
    assert images_in(moto_endpoint, repo) == []  # nothing pushed
    log = Path(env["STUB_LOG"]).read_text()
    assert "imagetools" not in log and "docker build" not in log and "docker push" not in log
    assert not (src / "image.json").exists()


@pytest.mark.integration
def test_promotion_refuses_a_tag_that_is_here_with_another_digest(sandbox, moto_endpoint):
    src, env = sandbox
    source_uri, digest = source_repository(moto_endpoint, promoted=True)
    repo = new_repository(moto_endpoint)
    ecr = boto3.client("ecr", region_name=REGION, endpoint_url=moto_endpoint)
    other = ecr.put_image(repositoryName=repo, imageManifest=manifest("2"), imageTag=TAG)["image"]
    other = other["imageId"]["imageDigest"]
    assert other != digest
    env = {**build_env(env, repo), "PROMOTE_FROM_REPOSITORY_URI": source_uri}
    result = codebuild("buildspec-build.yml", src, env)
    assert result.returncode == 1, result.stdout + result.stderr
    uri = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/{repo}"
    assert (
        f"PROMOTION REFUSED: {uri}:{TAG} is in this repository already as {other}, "
        f"but the source's {source_uri}:{TAG} is {digest}. Tags are immutable"
    ) in result.stdout
    assert "imagetools" not in Path(env["STUB_LOG"]).read_text()
    assert [i["imageDigest"] for i in images_in(moto_endpoint, repo)] == [other]
    assert not (src / "image.json").exists()


@pytest.mark.parametrize(
    "uri",
    ["chatsvc-staging", "222222222222.dkr.ecr.eu-west-1.amazonaws.com",
     "public.ecr.aws/chatsvc/staging", "2222.dkr.ecr.eu-west-1.amazonaws.com/chatsvc-staging"],
)  # fmt: skip
def test_promotion_needs_an_ecr_repository_uri(sandbox, uri):
    src, env = sandbox
    env = {**build_env(env, "chatsvc-unused"), "PROMOTE_FROM_REPOSITORY_URI": uri}
    result = codebuild("buildspec-build.yml", src, env)
    assert result.returncode == 1
    assert f"PROMOTE_FROM_REPOSITORY_URI={uri} is not an ECR repository URI" in result.stdout
    assert "imagetools" not in Path(env["STUB_LOG"]).read_text()


@pytest.mark.integration
def test_promotion_says_so_when_it_cannot_read_the_source(sandbox, moto_endpoint):
    """A wrong URI or a missing grant (PullAccountIds): a failure that names the fix."""
    src, env = sandbox
    repo = new_repository(moto_endpoint)
    missing = f"{SOURCE_ACCOUNT}.dkr.ecr.{SOURCE_REGION}.amazonaws.com/chatsvc-nowhere"
    env = {**build_env(env, repo), "PROMOTE_FROM_REPOSITORY_URI": missing}
    result = codebuild("buildspec-build.yml", src, env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"PROMOTION FAILED: cannot read {missing}:{TAG}" in result.stdout
    assert "RepositoryNotFoundException" in result.stdout and "PullAccountIds" in result.stdout
    assert images_in(moto_endpoint, repo) == []
