"""The ECR vulnerability scan gate: an image with unexcused findings never ships.

    python -m pipeline.scan_gate --repository chatsvc --tag 0123456789ab \\
        [--fail-on HIGH,MEDIUM] [--allowlist pipeline/scan-allowlist.json] [--timeout 900]

Waits for the image's scan (basic or enhanced/Inspector), tolerating
``ScanNotFoundException`` right after a push (and, if the scan still has not
started after ``--start-scan-after`` seconds, starting a basic scan itself),
``PENDING`` and ``IN_PROGRESS``. An enhanced scan that reports ``ACTIVE`` with
nothing in it yet counts as done only after ``--empty-grace`` seconds: Inspector
writes its findings after it reports ACTIVE.

Then it prints every finding (id, severity, package, installed and fixed
version where known) and fails on CRITICAL always and on the ``--fail-on``
severities (default HIGH,MEDIUM) when a fix exists. A finding the scan says has
no fix (enhanced scanning's ``fixAvailable: NO``, or no package with a fixed
version) cannot be removed by rebuilding: it is listed as "no fix available"
and does not block, unless ``--block-unfixable``. A finding whose fixability
is unknown (basic scanning without a fixed version) blocks. Severity counts
the scan reports but whose findings were not listed also fail the gate:
nothing is excused unseen. Suppressed or closed enhanced findings are shown,
not counted.

Allowlist (``pipeline/scan-allowlist.json``): a JSON list of objects

    [{"id": "CVE-2024-12345", "reason": "not reachable: we never parse X", "expires": "2025-06-30"}]

``id`` is the finding id shown in the table (CVE/GHSA id), ``reason`` is
required, ``expires`` is an ISO date; the entry excuses the finding through that
day, and an expired entry excuses nothing (the gate says so).

Exit codes: 0 passed, 1 blocking findings, 2 bad usage or allowlist,
3 timed out waiting for the scan, 4 the scan failed or AWS refused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from pipeline import EXIT_AWS_ERROR, EXIT_FAILED, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE

SEVERITY_ORDER = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED", "UNTRIAGED")
ALWAYS_FAIL = "CRITICAL"
DEFAULT_FAIL_ON = ("HIGH", "MEDIUM")
WAITING = {"IN_PROGRESS", "PENDING"}
DONE = {"COMPLETE", "ACTIVE"}  # ACTIVE: enhanced (continuous) scanning with findings
INACTIVE_FINDING = {"SUPPRESSED", "CLOSED"}  # enhanced finding statuses that do not count


class GateError(Exception):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Finding:
    id: str
    severity: str
    package: str = ""
    installed: str = ""
    fixed: str = ""
    status: str = "ACTIVE"
    fixable: bool | None = None  # None: the scan does not say

    @property
    def counts(self) -> bool:
        return self.status.upper() not in INACTIVE_FINDING


@dataclass(frozen=True)
class AllowEntry:
    id: str
    reason: str
    expires: dt.date

    def valid_on(self, today: dt.date) -> bool:
        return today <= self.expires


@dataclass
class ScanResult:
    status: str
    findings: list[Finding]
    counts: dict[str, int]


@dataclass
class Verdict:
    blocking: list[Finding]
    excused: list[tuple[Finding, AllowEntry]]
    expired: list[tuple[Finding, AllowEntry]]
    unlisted: dict[str, int]  # severity -> counted but not listed

    @property
    def passed(self) -> bool:
        return not self.blocking and not self.unlisted


# --------------------------------------------------------------------------- parsing


def _severity(value: str | None) -> str:
    value = (value or "UNDEFINED").upper()
    return value if value in SEVERITY_ORDER else "UNDEFINED"


def parse_basic(item: dict) -> Finding:
    attrs = {a.get("key"): a.get("value", "") for a in item.get("attributes", [])}
    fixed = attrs.get("fixed_in_version", "") or attrs.get("fixedInVersion", "")
    return Finding(
        id=item.get("name") or item.get("uri") or "?",
        severity=_severity(item.get("severity")),
        package=attrs.get("package_name", ""),
        installed=attrs.get("package_version", ""),
        fixed=fixed,
        fixable=True if fixed else None,
    )


def parse_enhanced(item: dict) -> Finding:
    details = item.get("packageVulnerabilityDetails") or {}
    packages = details.get("vulnerablePackages") or []
    names = ", ".join(dict.fromkeys(p.get("name", "") for p in packages if p.get("name")))
    versions = ", ".join(dict.fromkeys(p.get("version", "") for p in packages if p.get("version")))
    fixed = ", ".join(
        dict.fromkeys(
            p["fixedInVersion"]
            for p in packages
            if p.get("fixedInVersion") and p["fixedInVersion"] != "NotAvailable"
        )
    )
    available = (item.get("fixAvailable") or "").upper()
    if available in ("YES", "PARTIAL"):
        fixable = True
    elif available == "NO":
        fixable = False
    elif packages and all(p.get("fixedInVersion") == "NotAvailable" for p in packages):
        fixable = False
    else:
        fixable = True if fixed else None
    return Finding(
        id=details.get("vulnerabilityId") or item.get("title") or item.get("findingArn") or "?",
        severity=_severity(item.get("severity")),
        package=names,
        installed=versions,
        fixed=fixed,
        status=item.get("status") or "ACTIVE",
        fixable=fixable,
    )


def parse_page(page: dict) -> tuple[list[Finding], dict[str, int]]:
    body = page.get("imageScanFindings") or {}
    findings = [parse_basic(f) for f in body.get("findings") or []]
    findings += [parse_enhanced(f) for f in body.get("enhancedFindings") or []]
    counts = {
        _severity(k): int(v or 0) for k, v in (body.get("findingSeverityCounts") or {}).items()
    }
    return findings, counts


# --------------------------------------------------------------------------- waiting


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def wait_for_scan(
    ecr,
    repository: str,
    tag: str,
    *,
    timeout: float = 900,
    poll: float = 10,
    start_scan_after: float | None = 60,
    empty_grace: float = 180,
    log: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ScanResult:
    """Poll until the scan is done; raise GateError on failure or timeout."""
    image = {"imageTag": tag}
    started_at = clock()
    deadline = started_at + timeout
    last = None
    scan_requested = False
    while True:
        try:
            page = ecr.describe_image_scan_findings(
                repositoryName=repository, imageId=image, maxResults=1000
            )
            status = (page.get("imageScanStatus") or {}).get("status", "PENDING").upper()
            description = (page.get("imageScanStatus") or {}).get("description", "")
        except ClientError as exc:
            code = _code(exc)
            if code in ("RepositoryNotFoundException", "ImageNotFoundException"):
                raise GateError(
                    f"{repository}:{tag}: {code}: no such image", EXIT_AWS_ERROR
                ) from exc
            if code != "ScanNotFoundException":
                raise
            status, description, page = "NOT_STARTED", "no scan yet", None
            if (
                start_scan_after is not None
                and not scan_requested
                and clock() - started_at >= start_scan_after
            ):
                scan_requested = True
                try:
                    ecr.start_image_scan(repositoryName=repository, imageId=image)
                    log("no scan had started: started a basic scan")
                except ClientError as start_exc:  # enhanced scanning, already scanned today...
                    log(f"could not start a scan ({_code(start_exc)}); waiting for one")

        if status in DONE and page is not None:
            # Enhanced scanning reports ACTIVE before Inspector has written any
            # finding: "done with nothing" right after a push is not yet done.
            if not (status == "ACTIVE" and _empty(page) and clock() - started_at < empty_grace):
                return _collect(ecr, repository, image, status, page)
            status = "ACTIVE, no findings yet"
        elif status not in WAITING and status != "NOT_STARTED":
            raise GateError(
                f"the scan of {repository}:{tag} ended as {status}: {description or 'no detail'}"
                " — the image cannot be cleared without a scan",
                EXIT_AWS_ERROR,
            )
        if status != last:
            log(
                f"scan of {repository}:{tag}: {status}"
                + (f" ({description})" if description else "")
            )
            last = status
        remaining = deadline - clock()
        if remaining <= 0:
            raise GateError(
                f"timed out after {timeout:.0f}s waiting for the scan of {repository}:{tag} "
                f"(last status: {status}). Check that the repository scans on push (basic) or "
                f"that enhanced scanning covers it, then retry the stage",
                EXIT_TIMEOUT,
            )
        sleep(min(poll, remaining))


def _empty(page: dict) -> bool:
    body = page.get("imageScanFindings") or {}
    return not (
        body.get("findings") or body.get("enhancedFindings") or body.get("findingSeverityCounts")
    )


def _collect(ecr, repository: str, image: dict, status: str, page: dict) -> ScanResult:
    findings, counts = parse_page(page)
    token, seen = page.get("nextToken"), set()
    while token and token not in seen:  # a repeated token would loop forever
        seen.add(token)
        page = ecr.describe_image_scan_findings(
            repositoryName=repository, imageId=image, maxResults=1000, nextToken=token
        )
        more, more_counts = parse_page(page)
        findings += more
        counts = counts or more_counts
        token = page.get("nextToken")
    unique = list(dict.fromkeys(findings))  # a finding listed twice is one finding
    return ScanResult(status, unique, counts)


# --------------------------------------------------------------------------- deciding


def load_allowlist(path: str | None) -> dict[str, AllowEntry]:
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise GateError(f"cannot read the allowlist {path}: {exc}", EXIT_USAGE) from exc
    if not isinstance(data, list):
        raise GateError(f"{path}: expected a JSON list of entries", EXIT_USAGE)
    entries: dict[str, AllowEntry] = {}
    for index, item in enumerate(data):
        where = f"{path} entry {index}"
        if not isinstance(item, dict):
            raise GateError(f"{where}: expected an object", EXIT_USAGE)
        missing = [k for k in ("id", "reason", "expires") if not str(item.get(k) or "").strip()]
        if missing:
            raise GateError(f"{where}: missing {', '.join(missing)}", EXIT_USAGE)
        try:
            expires = dt.date.fromisoformat(str(item["expires"]))
        except ValueError as exc:
            raise GateError(f"{where}: expires must be YYYY-MM-DD: {exc}", EXIT_USAGE) from exc
        entries[str(item["id"]).strip()] = AllowEntry(
            str(item["id"]).strip(), str(item["reason"]).strip(), expires
        )
    return entries


def evaluate(
    result: ScanResult,
    fail_on: set[str],
    allowlist: dict[str, AllowEntry],
    today: dt.date,
    *,
    block_unfixable: bool = False,
) -> Verdict:
    failing = set(fail_on) | {ALWAYS_FAIL}
    blocking, excused, expired = [], [], []
    for finding in result.findings:
        if not finding.counts or finding.severity not in failing:
            continue
        if finding.fixable is False and not block_unfixable:
            continue  # listed as "no fix available": a rebuild cannot remove it
        entry = allowlist.get(finding.id)
        if entry and entry.valid_on(today):
            excused.append((finding, entry))
            continue
        if entry:
            expired.append((finding, entry))
        blocking.append(finding)
    listed = Counter(f.severity for f in result.findings)
    unlisted = {
        sev: result.counts.get(sev, 0) - listed.get(sev, 0)
        for sev in SEVERITY_ORDER
        if sev in failing and result.counts.get(sev, 0) > listed.get(sev, 0)
    }
    return Verdict(blocking, excused, expired, unlisted)


def render(result: ScanResult, verdict: Verdict) -> str:
    blocking = {id(f) for f in verdict.blocking}
    excused = {id(f): e for f, e in verdict.excused}
    expired = {id(f): e for f, e in verdict.expired}
    rows = [("ID", "SEVERITY", "PACKAGE", "INSTALLED", "FIXED IN", "VERDICT")]
    rank = {sev: i for i, sev in enumerate(SEVERITY_ORDER)}
    for f in sorted(result.findings, key=lambda f: (rank[f.severity], f.id)):
        if id(f) in expired:
            verdict_text = f"BLOCKS (allowlist entry expired {expired[id(f)].expires})"
        elif id(f) in blocking:
            verdict_text = "BLOCKS"
        elif id(f) in excused:
            verdict_text = f"allowed until {excused[id(f)].expires}"
        elif not f.counts:
            verdict_text = f.status.lower()
        elif f.fixable is False:
            verdict_text = "no fix available"
        else:
            verdict_text = "ok"
        rows.append((f.id, f.severity, f.package, f.installed, f.fixed or "-", verdict_text))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
        for r in rows
    ]
    counts = ", ".join(f"{s} {result.counts.get(s, 0)}" for s in SEVERITY_ORDER[:5])
    return "\n".join([*lines, f"severity counts: {counts}"])


def parse_fail_on(value: str) -> set[str]:
    wanted = {v.strip().upper() for v in value.split(",") if v.strip()}
    unknown = wanted - set(SEVERITY_ORDER) - {"NONE"}
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown severity {', '.join(sorted(unknown))}; use {', '.join(SEVERITY_ORDER)}"
        )
    return wanted - {"NONE"}


def main(argv: list[str] | None = None, *, ecr=None, sleep=time.sleep) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.scan_gate",
        description=(
            "Wait for the ECR scan of an image and fail on CRITICAL findings and on the "
            "--fail-on severities, unless an unexpired allowlist entry excuses them."
        ),
        epilog=(
            'Allowlist: a JSON list of {"id", "reason", "expires": "YYYY-MM-DD"}. '
            "Exit codes: 0 passed, 1 blocking findings, 2 bad usage/allowlist, 3 timed out, "
            "4 scan failed or AWS error."
        ),
    )
    parser.add_argument("--repository", required=True, help="ECR repository name")
    parser.add_argument("--tag", required=True, help="image tag")
    parser.add_argument(
        "--fail-on",
        type=parse_fail_on,
        default=set(DEFAULT_FAIL_ON),
        help="severities that fail besides CRITICAL (default HIGH,MEDIUM; NONE for none)",
    )
    parser.add_argument("--allowlist", help="allowlist JSON file")
    parser.add_argument(
        "--block-unfixable",
        action="store_true",
        help="also fail on findings the scan says have no fix (default: list them only)",
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds to wait (900)")
    parser.add_argument("--poll", type=float, default=10, help="seconds between polls (10)")
    parser.add_argument(
        "--start-scan-after",
        type=float,
        default=60,
        help="start a basic scan if none exists after this many seconds; -1 never (60)",
    )
    parser.add_argument(
        "--empty-grace",
        type=float,
        default=180,
        help="an enhanced scan ACTIVE with no findings counts as done only after this "
        "many seconds (180): Inspector writes findings after it reports ACTIVE",
    )
    parser.add_argument("--region", help="AWS region (default: from the environment)")
    args = parser.parse_args(argv)

    try:
        allowlist = load_allowlist(args.allowlist)
        ecr = ecr or boto3.client("ecr", region_name=args.region)
        print(
            f"scan gate: {args.repository}:{args.tag}, fails on "
            f"{', '.join(s for s in SEVERITY_ORDER if s in args.fail_on | {ALWAYS_FAIL})}"
        )
        result = wait_for_scan(
            ecr,
            args.repository,
            args.tag,
            timeout=args.timeout,
            poll=args.poll,
            start_scan_after=None if args.start_scan_after < 0 else args.start_scan_after,
            empty_grace=args.empty_grace,
            sleep=sleep,
        )
    except GateError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return exc.code
    except (ClientError, BotoCoreError) as exc:
        print(f"FAILED: AWS error: {exc}", file=sys.stderr)
        return EXIT_AWS_ERROR

    today = dt.datetime.now(dt.UTC).date()
    verdict = evaluate(result, args.fail_on, allowlist, today, block_unfixable=args.block_unfixable)
    print(f"scan status: {result.status}, {len(result.findings)} finding(s)")
    print(render(result, verdict))
    for finding, entry in verdict.excused:
        print(f"allowlisted: {finding.id} until {entry.expires}: {entry.reason}")
    for finding, entry in verdict.expired:
        print(f"EXPIRED allowlist entry: {finding.id} expired {entry.expires}; it excuses nothing")
    if verdict.passed:
        print(f"PASSED: {args.repository}:{args.tag} has no blocking findings")
        return EXIT_OK
    by_sev = Counter(f.severity for f in verdict.blocking)
    for sev, n in verdict.unlisted.items():
        print(f"FAILED: the scan counts {n} {sev} finding(s) it did not list", file=sys.stderr)
        by_sev[sev] += n
    summary = ", ".join(f"{sev} {by_sev[sev]}" for sev in SEVERITY_ORDER if by_sev.get(sev))
    print(
        f"FAILED: {sum(by_sev.values())} blocking finding(s) ({summary}) in "
        f"{args.repository}:{args.tag}; fix them (rebuild with patched packages) or add "
        f"them to the allowlist with a reason and an expiry date",
        file=sys.stderr,
    )
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
