"""cfn-lint, checkov and hadolint over cloudformation/ and docker/: no finding at all.

The tools live in .venv-infra (`make infra-tools`, which `make test` runs first); a
missing tool fails these tests instead of skipping them.
"""

import json
import re
import subprocess

import pytest

from tests.infra.cfn import DOCKER, ROOT, TEMPLATES, template_names, tool

pytestmark = pytest.mark.infra

SKIP_COMMENT = re.compile(r"#\s*checkov:skip=(?P<id>[A-Z0-9_]+)(?P<rest>.*)$", re.MULTILINE)


def run(args, **kwargs):
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False, **kwargs)


def decode_all(text: str) -> list[dict]:
    """checkov prints one JSON document per framework/directory, back to back."""
    decoder, docs, pos = json.JSONDecoder(), [], 0
    text = text.strip()
    while pos < len(text):
        doc, end = decoder.raw_decode(text, pos)
        docs.extend(doc if isinstance(doc, list) else [doc])
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return docs


@pytest.fixture(scope="module")
def checkov_reports(tmp_path_factory) -> list[dict]:
    """One checkov run over the templates and the Dockerfile for the whole module."""
    result = run(
        [
            tool("checkov"),
            "--directory",
            "cloudformation",
            "--directory",
            "docker",
            "--framework",
            "cloudformation",
            "dockerfile",
            "--output",
            "json",
            "--compact",
            "--skip-download",
        ],
        # Offline: no platform look-ups; a throwaway HOME for checkov's caches.
        env={
            "BC_SKIP_MAPPING": "TRUE",
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path_factory.mktemp("checkov-home")),
        },
    )
    assert result.stdout.strip(), f"checkov printed nothing: {result.stderr[-2000:]}"
    reports = decode_all(result.stdout)
    assert {r["check_type"] for r in reports} == {"cloudformation", "dockerfile"}
    return reports


def test_cfn_lint_reports_nothing_on_any_template():
    templates = [str(TEMPLATES / name) for name in template_names()]
    assert len(templates) >= 15
    result = run([tool("cfn-lint"), "--format", "parseable", *templates])
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_checkov_has_no_failed_check(checkov_reports):
    failed = [
        f"{r['check_type']}: {c['check_id']} {c['resource']} ({c['file_path']})"
        for r in checkov_reports
        for c in r["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    parsing = [r["summary"]["parsing_errors"] for r in checkov_reports]
    assert not any(parsing), parsing
    resources = sum(
        r["summary"]["resource_count"]
        for r in checkov_reports
        if r["check_type"] == "cloudformation"
    )
    assert resources > 100  # every template was parsed


def test_checkov_skips_are_inline_with_a_reason(checkov_reports):
    skipped = [c for r in checkov_reports for c in r["results"]["skipped_checks"]]
    for check in skipped:
        reason = (check["check_result"].get("suppress_comment") or "").strip()
        assert len(reason) >= 20, f"{check['check_id']} in {check['file_path']}: no reason"
    # ... and every inline skip names a check and says why, in a sentence.
    for path in [*TEMPLATES.glob("*.yaml"), DOCKER / "Dockerfile"]:
        for match in SKIP_COMMENT.finditer(path.read_text()):
            rest = match.group("rest")
            assert rest.startswith(":") and len(rest) > 20, f"{path.name}: {match.group(0)}"


def test_hadolint_reports_nothing():
    result = run([tool("hadolint"), "--no-color", str(DOCKER / "Dockerfile")])
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr
