"""Helpers for the infra tests: paths, the infra tools, a CloudFormation YAML loader."""

import re
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "cloudformation"
DOCKER = ROOT / "docker"
INFRA_BIN = ROOT / ".venv-infra" / "bin"


def tool(name: str) -> str:
    """Path of an infra tool from .venv-infra (`make infra-tools`); fail, never skip."""
    path = INFRA_BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make infra-tools`", pytrace=False)
    return str(path)


def docker_compose_available() -> bool:
    import subprocess

    docker = shutil.which("docker")
    if not docker:
        return False
    probe = subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, check=False
    )
    return probe.returncode == 0


class CfnLoader(yaml.SafeLoader):
    """SafeLoader that turns the short-form intrinsics (!Ref, !Sub ...) into dicts."""


def _intrinsic(loader, tag_suffix, node):
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


CfnLoader.add_multi_constructor("!", _intrinsic)


def load(name: str) -> dict:
    return yaml.load((TEMPLATES / name).read_text(), Loader=CfnLoader)  # noqa: S506


def template_names() -> list[str]:
    return sorted(path.name for path in TEMPLATES.glob("*.yaml"))


def nested_stacks(template: dict) -> dict[str, tuple[str, dict]]:
    """{logical id: (child template file, parameters passed)} of AWS::CloudFormation::Stack."""
    found = {}
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] != "AWS::CloudFormation::Stack":
            continue
        url = resource["Properties"]["TemplateURL"]["Fn::Sub"]
        if isinstance(url, list):  # [text, {variables}]
            url = url[0]
        match = re.search(r"\}([a-z0-9-]+\.yaml)$", url)
        assert match, f"{logical_id}: TemplateURL {url!r} does not end in a template file"
        found[logical_id] = (match.group(1), resource["Properties"].get("Parameters", {}))
    return found


def walk(node):
    """Every dict and list inside a template node, depth first."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)
