"""The scan gate against moto's ECR, with scan results the tests control."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ecr.models import ecr_backends

from pipeline import scan_gate

pytestmark = pytest.mark.infra

REGION = "us-east-1"
REPO = "chatsvc"
TAG = "0123456789ab"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ecr(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        client = boto3.client("ecr", region_name=REGION)
        client.create_repository(repositoryName=REPO)
        yield client


def backend():
    return ecr_backends[DEFAULT_ACCOUNT_ID][REGION]


def push(ecr, tag: str = TAG, *, scanned: bool = True) -> None:
    """What `docker push` leaves in ECR; `scanned` is scan-on-push having started."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"digest": "sha256:" + "a" * 64, "size": 1, "mediaType": "x"},
        "layers": [],
    }
    ecr.put_image(repositoryName=REPO, imageManifest=json.dumps(manifest), imageTag=tag)
    if scanned:
        ecr.start_image_scan(repositoryName=REPO, imageId={"imageTag": tag})


def scan_result(status="COMPLETE", findings=None, enhanced=None, counts=None, description=""):
    body: dict = {}
    if findings is not None:
        body["findings"] = findings
    if enhanced is not None:
        body["enhancedFindings"] = enhanced
    if counts is not None:
        body["findingSeverityCounts"] = counts
    result = {
        "registryId": DEFAULT_ACCOUNT_ID,
        "repositoryName": REPO,
        "imageId": {"imageTag": TAG},
        "imageScanStatus": {"status": status, "description": description},
    }
    if body:
        result["imageScanFindings"] = body
    return result


def queue(*results) -> None:
    """Scan results ECR will report, in order (moto's custom scan results)."""
    backend().scan_finding_results.extend(results)


def advance() -> None:
    """Time passes: the next describe call reports the next queued result."""
    image = backend().repositories[REPO]._get_image(TAG, None)
    image.scan_finding_results.clear()


def basic(cve, severity, package="openssl", version="3.0.1"):
    return {
        "name": cve,
        "severity": severity,
        "uri": f"https://example.invalid/{cve}",
        "attributes": [
            {"key": "package_name", "value": package},
            {"key": "package_version", "value": version},
        ],
    }


def enhanced(cve, severity, package="libexpat1", version="2.5.0", fixed="2.6.2", status="ACTIVE"):
    return {
        "awsAccountId": DEFAULT_ACCOUNT_ID,
        "findingArn": f"arn:aws:inspector2:{REGION}:{DEFAULT_ACCOUNT_ID}:finding/{cve}",
        "severity": severity,
        "status": status,
        "title": f"{cve} - {package}",
        "type": "PACKAGE_VULNERABILITY",
        "packageVulnerabilityDetails": {
            "vulnerabilityId": cve,
            "source": "DEBIAN_CVE",
            "vulnerablePackages": [
                {
                    "name": package,
                    "version": version,
                    "fixedInVersion": fixed,
                    "packageManager": "OS",
                }
            ],
        },
    }


def run(capsys, *args, sleep=lambda s: None):
    argv = ["--repository", REPO, "--tag", TAG, "--poll", "0.01", *args]
    code = scan_gate.main(argv, sleep=sleep)
    out, err = capsys.readouterr()
    return code, out + err


def allowlist(tmp_path, *entries) -> str:
    path = tmp_path / "allow.json"
    path.write_text(json.dumps(list(entries)))
    return str(path)


def days(n: int) -> str:
    return (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=n)).isoformat()


# --------------------------------------------------------------------------- waiting


def test_tolerates_scan_not_found_right_after_push_then_passes_a_clean_image(ecr, capsys):
    push(ecr, scanned=False)
    queue(scan_result(findings=[], counts={}))
    calls = []

    def sleep(_):
        calls.append(1)
        if len(calls) == 2:  # the scan on push starts a little after the push
            ecr.start_image_scan(repositoryName=REPO, imageId={"imageTag": TAG})

    code, out = run(capsys, "--start-scan-after", "-1", sleep=sleep)
    assert code == 0, out
    assert "NOT_STARTED" in out
    assert f"PASSED: {REPO}:{TAG} has no blocking findings" in out


def test_starts_a_scan_itself_when_none_ever_starts(ecr, capsys):
    push(ecr, scanned=False)
    queue(scan_result(findings=[], counts={}))
    code, out = run(capsys, "--start-scan-after", "0")
    assert code == 0, out
    assert "started a basic scan" in out


def test_waits_through_pending_and_in_progress_then_blocks_a_high_finding(ecr, capsys):
    push(ecr)
    queue(
        scan_result("PENDING"),
        scan_result("IN_PROGRESS", description="scanning"),
        scan_result(findings=[basic("CVE-2024-0001", "HIGH")], counts={"HIGH": 1}),
    )
    seen = []

    def sleep(_):
        seen.append(1)
        advance()

    code, out = run(capsys, sleep=sleep)
    assert code == 1, out
    assert len(seen) == 2
    assert "PENDING" in out and "IN_PROGRESS (scanning)" in out
    row = next(line for line in out.splitlines() if line.startswith("CVE-2024-0001"))
    assert row.split()[:4] == ["CVE-2024-0001", "HIGH", "openssl", "3.0.1"]
    assert row.rstrip().endswith("BLOCKS")
    assert "FAILED: 1 blocking finding(s) (HIGH 1)" in out


def test_moto_default_basic_finding_shape_blocks(ecr, capsys):
    # moto's own canned basic-scan answer: one HIGH finding with attributes.
    push(ecr)
    code, out = run(capsys)
    assert code == 1
    assert "CVE-9999-9999" in out and "moto_fake" in out


def test_times_out_with_a_clear_message(ecr, capsys):
    push(ecr)
    queue(scan_result("IN_PROGRESS"))
    code, out = run(capsys, "--timeout", "0.2", sleep=time.sleep)
    assert code == 3
    assert f"timed out after 0s waiting for the scan of {REPO}:{TAG}" in out
    assert "last status: IN_PROGRESS" in out


@pytest.mark.parametrize("status", ["FAILED", "UNSUPPORTED_IMAGE", "FINDINGS_UNAVAILABLE"])
def test_a_scan_that_cannot_clear_the_image_fails(ecr, capsys, status):
    push(ecr)
    queue(scan_result(status, description="no luck"))
    code, out = run(capsys)
    assert code == 4
    assert f"ended as {status}: no luck" in out


def test_missing_image_fails_fast(ecr, capsys):
    code, out = run(capsys)
    assert code == 4
    assert "no such image" in out


# --------------------------------------------------------------------------- deciding


def test_critical_always_fails_whatever_fail_on_says(ecr, capsys):
    push(ecr)
    queue(scan_result(findings=[basic("CVE-2024-0002", "CRITICAL")], counts={"CRITICAL": 1}))
    code, out = run(capsys, "--fail-on", "NONE")
    assert code == 1
    assert "CRITICAL 1" in out


def test_fail_on_controls_the_other_severities(ecr, capsys):
    push(ecr)
    finding = scan_result(
        findings=[basic("CVE-2024-0003", "MEDIUM"), basic("CVE-2024-0004", "LOW")],
        counts={"MEDIUM": 1, "LOW": 1},
    )
    queue(finding)
    code, out = run(capsys, "--fail-on", "HIGH")
    assert code == 0, out
    advance()
    queue(finding)
    code, out = run(capsys)  # default HIGH,MEDIUM
    assert code == 1
    assert "(MEDIUM 1)" in out


def test_missing_severity_counts_are_zero(ecr, capsys):
    push(ecr)
    queue(scan_result(findings=[basic("CVE-2024-0005", "LOW")]))  # no findingSeverityCounts
    code, out = run(capsys)
    assert code == 0, out
    assert "severity counts: CRITICAL 0, HIGH 0, MEDIUM 0" in out


def test_counted_but_unlisted_findings_fail(ecr, capsys):
    push(ecr)
    queue(scan_result(findings=[], counts={"CRITICAL": 2}))
    code, out = run(capsys)
    assert code == 1
    assert "counts 2 CRITICAL finding(s) it did not list" in out


def test_enhanced_scanning_statuses_and_finding_shape(ecr, capsys):
    push(ecr)
    queue(
        scan_result("PENDING"),
        scan_result(
            "ACTIVE",
            enhanced=[
                enhanced("CVE-2024-1000", "HIGH"),
                enhanced("CVE-2024-1001", "CRITICAL", status="SUPPRESSED"),
                enhanced("CVE-2024-1002", "CRITICAL", status="CLOSED"),
                enhanced("CVE-2024-1003", "UNTRIAGED", fixed="NotAvailable"),
            ],
            counts={"HIGH": 1, "UNTRIAGED": 1},
        ),
    )
    code, out = run(capsys, sleep=lambda s: advance())
    assert code == 1, out
    lines = out.splitlines()
    high = next(line for line in lines if line.startswith("CVE-2024-1000"))
    assert high.split()[:5] == ["CVE-2024-1000", "HIGH", "libexpat1", "2.5.0", "2.6.2"]
    assert high.rstrip().endswith("BLOCKS")
    assert next(line for line in lines if line.startswith("CVE-2024-1001")).endswith("suppressed")
    assert next(line for line in lines if line.startswith("CVE-2024-1002")).endswith("closed")
    untriaged = next(line for line in lines if line.startswith("CVE-2024-1003"))
    assert untriaged.split()[4] == "-"  # no fix known
    assert "FAILED: 1 blocking finding(s) (HIGH 1)" in out


def test_enhanced_high_finding_passes_when_allowlisted(ecr, capsys, tmp_path):
    push(ecr)
    queue(scan_result("ACTIVE", enhanced=[enhanced("CVE-2024-1000", "HIGH")], counts={"HIGH": 1}))
    path = allowlist(
        tmp_path, {"id": "CVE-2024-1000", "reason": "not reachable", "expires": days(30)}
    )
    code, out = run(capsys, "--allowlist", path)
    assert code == 0, out
    assert f"allowlisted: CVE-2024-1000 until {days(30)}: not reachable" in out


def test_allowlist_entry_valid_through_its_expiry_day(ecr, capsys, tmp_path):
    push(ecr)
    queue(scan_result(findings=[basic("CVE-2024-0006", "HIGH")], counts={"HIGH": 1}))
    path = allowlist(
        tmp_path, {"id": "CVE-2024-0006", "reason": "vendor fix due", "expires": days(0)}
    )
    code, out = run(capsys, "--allowlist", path)
    assert code == 0, out


def test_expired_allowlist_entry_excuses_nothing(ecr, capsys, tmp_path):
    push(ecr)
    queue(scan_result(findings=[basic("CVE-2024-0006", "HIGH")], counts={"HIGH": 1}))
    path = allowlist(
        tmp_path, {"id": "CVE-2024-0006", "reason": "vendor fix due", "expires": days(-1)}
    )
    code, out = run(capsys, "--allowlist", path)
    assert code == 1
    assert f"EXPIRED allowlist entry: CVE-2024-0006 expired {days(-1)}" in out
    assert "BLOCKS (allowlist entry expired" in out


def test_allowlist_does_not_excuse_other_findings(ecr, capsys, tmp_path):
    push(ecr)
    queue(
        scan_result(
            findings=[basic("CVE-2024-0006", "HIGH"), basic("CVE-2024-0007", "CRITICAL")],
            counts={"HIGH": 1, "CRITICAL": 1},
        )
    )
    path = allowlist(tmp_path, {"id": "CVE-2024-0006", "reason": "r", "expires": days(10)})
    code, out = run(capsys, "--allowlist", path)
    assert code == 1
    assert "(CRITICAL 1)" in out


@pytest.mark.parametrize(
    "content",
    [
        '[{"id": "CVE-1", "expires": "2030-01-01"}]',  # no reason
        '[{"id": "CVE-1", "reason": "r", "expires": "someday"}]',
        '{"id": "CVE-1"}',
        "not json",
    ],
)
def test_invalid_allowlist_is_a_usage_error(ecr, capsys, tmp_path, content):
    path = tmp_path / "allow.json"
    path.write_text(content)
    code, out = run(capsys, "--allowlist", str(path))
    assert code == 2
    assert "allow" in out


def test_unknown_severity_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        scan_gate.main(["--repository", REPO, "--tag", TAG, "--fail-on", "HIGHEST"])
    assert exc.value.code == 2


def test_repository_allowlist_file_is_valid():
    entries = scan_gate.load_allowlist(str(ROOT / "pipeline" / "scan-allowlist.json"))
    assert isinstance(entries, dict)


def test_findings_without_a_fix_are_listed_but_do_not_block(ecr, capsys):
    """Debian ships HIGH CVEs with no fix: a rebuild cannot remove them, so they cannot gate."""
    push(ecr)
    no_fix = {**enhanced("CVE-2024-1111", "HIGH", fixed="NotAvailable"), "fixAvailable": "NO"}
    fixable = {**enhanced("CVE-2024-2222", "MEDIUM"), "fixAvailable": "YES"}
    result = scan_result(status="ACTIVE", enhanced=[no_fix], counts={"HIGH": 1})
    queue(result)
    code, out = run(capsys)
    assert code == 0, out
    row = next(line for line in out.splitlines() if line.startswith("CVE-2024-1111"))
    assert row.rstrip().endswith("no fix available")

    advance()
    queue(result)
    code, out = run(capsys, "--block-unfixable")
    assert code == 1, out

    advance()
    queue(scan_result(status="ACTIVE", enhanced=[no_fix, fixable], counts={"HIGH": 1, "MEDIUM": 1}))
    code, out = run(capsys)
    assert code == 1 and "(MEDIUM 1)" in out  # the fixable one still blocks


def test_a_basic_finding_of_unknown_fixability_blocks(ecr, capsys):
    push(ecr)
    queue(scan_result(findings=[basic("CVE-2024-3333", "HIGH")], counts={"HIGH": 1}))
    code, out = run(capsys)
    assert code == 1 and "CVE-2024-3333" in out


def test_an_enhanced_scan_active_with_nothing_yet_is_waited_for(ecr, capsys):
    """ECR says ACTIVE before Inspector has written findings: "done, clean" would fail open."""
    push(ecr)
    queue(
        scan_result("ACTIVE", enhanced=[]),
        scan_result("ACTIVE", enhanced=[enhanced("CVE-2024-4444", "HIGH")], counts={"HIGH": 1}),
    )
    code, out = run(capsys, sleep=lambda s: advance())
    assert code == 1, out
    assert "ACTIVE, no findings yet" in out and "CVE-2024-4444" in out


def test_an_enhanced_scan_still_empty_after_the_grace_passes(ecr, capsys):
    push(ecr)
    queue(scan_result("ACTIVE", enhanced=[]))
    code, out = run(capsys, "--empty-grace", "0.05", sleep=time.sleep)
    assert code == 0, out
