"""Swap the ALB's production and test listeners (blue/green), safely.

The Lambda behind the pipeline's "Swap" action, and the operator's rollback tool:

    python -m pipeline.swap_lambda --load-balancer NAME              # swap (promote test)
    python -m pipeline.swap_lambda --load-balancer NAME --to-color blue   # make blue live
    python -m pipeline.swap_lambda --load-balancer NAME --status     # show, change nothing

The listeners are the truth about which color is live: the production listener
(443, or 80 without a certificate) and the test listener (8080) each forward to
one of two target groups tagged ``color`` = blue|green. A swap:

1. reads both listeners and the target groups' tags;
2. refuses when the target group that is to become live has no healthy target;
3. records its intent on the load balancer (tags ``swap-job``, ``swap-target``,
   ``swap-production-tg``, ``swap-test-tg``) so that a rerun, or a crash between
   the two listener updates, can be completed rather than swapped back;
4. points production at the new color, then test at the old one;
5. reads both listeners back; on any failure it restores both listeners to
   where they were (a half-done swap never stays) and reports why;
6. sets the target groups' ``live`` tags ("true"/"false").

A rerun of the same CodePipeline job (Lambda retries an asynchronous invocation
that errored) converges to the job's recorded target instead of swapping again.
``--to-color`` is idempotent by construction. In the pipeline the Lambda reads
the run's ``deployment.json`` (its input artifact) and swaps *to* that run's
``TestColor``, only if that color still runs the run's ``TestImageTag``: a
CodePipeline retry (a new job id) after a swap that succeeded finds the color
live already and changes nothing, and a run whose test color another run has
deployed over since is refused instead of shipping that other release.

This module must only need boto3 (it is deployed alone as ``swap_lambda.py`` at
the root of a zip, handler ``swap_lambda.handler``); keep it self-contained.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field

import boto3
from botocore.exceptions import BotoCoreError, ClientError

TEST_PORT = 8080
PRODUCTION_PORTS = (443, 80)  # preferred order
COLORS = ("blue", "green")
TAG_COLOR = "color"
TAG_LIVE = "live"
TAG_IMAGE = "image"
MARKER_JOB = "swap-job"
MARKER_TARGET = "swap-target"
MARKER_PRODUCTION_TG = "swap-production-tg"
MARKER_TEST_TG = "swap-test-tg"
MAX_FAILURE_MESSAGE = 5000  # CodePipeline FailureDetails.message limit
PROMOTED_PREFIX = "promoted-"  # ECR's lifecycle policy keeps these (cloudformation/ecr.yaml)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class SwapError(Exception):
    """The swap was refused or failed; the message says why and where traffic is."""


Log = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


def other_color(color: str) -> str:
    return "green" if color == "blue" else "blue"


@dataclass
class TargetGroup:
    arn: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        # arn:...:targetgroup/<name>/<id>
        parts = self.arn.split(":")[-1].split("/")
        return parts[1] if len(parts) >= 3 else self.arn

    @property
    def color(self) -> str | None:
        return self.tags.get(TAG_COLOR)

    @property
    def live(self) -> str | None:
        return self.tags.get(TAG_LIVE)

    @property
    def image(self) -> str:
        return self.tags.get(TAG_IMAGE, "").strip()

    def describe(self) -> str:
        return f"{self.name} ({self.color or 'no color tag'})"


@dataclass
class Listener:
    arn: str
    port: int
    target_group_arn: str


@dataclass
class AlbState:
    """What the load balancer's listeners and target groups say right now."""

    name: str
    arn: str
    dns_name: str
    production: Listener
    test: Listener
    groups: dict[str, TargetGroup]  # by ARN: every target group involved
    marker: dict[str, str]  # the load balancer's swap-* tags

    @property
    def production_tg(self) -> TargetGroup:
        return self.groups[self.production.target_group_arn]

    @property
    def test_tg(self) -> TargetGroup:
        return self.groups[self.test.target_group_arn]

    @property
    def half_done(self) -> bool:
        """Both listeners forward to the same target group: an interrupted swap."""
        return self.production.target_group_arn == self.test.target_group_arn

    def by_color(self, color: str) -> TargetGroup | None:
        for group in self.groups.values():
            if group.color == color:
                return group
        return None

    @property
    def live_color(self) -> str | None:
        return self.production_tg.color

    @property
    def test_color(self) -> str | None:
        return None if self.half_done else self.test_tg.color


# --------------------------------------------------------------------------- reading


def find_load_balancer(elbv2, name: str) -> dict | None:
    """The load balancer called `name`, or None when it does not exist (yet)."""
    try:
        found = elbv2.describe_load_balancers(Names=[name])["LoadBalancers"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in (
            "LoadBalancerNotFound",
            "LoadBalancerNotFoundException",
        ):
            return None
        raise
    return found[0] if found else None


def forward_target(listener: dict) -> str | None:
    """The single target group a listener's default action forwards to (or None)."""
    actions = sorted(listener.get("DefaultActions", []), key=lambda a: a.get("Order", 0))
    for action in actions:
        if action.get("Type") != "forward":
            continue
        if action.get("TargetGroupArn"):
            return action["TargetGroupArn"]
        groups = action.get("ForwardConfig", {}).get("TargetGroups", [])
        weighted = [g for g in groups if g.get("Weight", 1) > 0]
        if len(weighted) == 1:
            return weighted[0]["TargetGroupArn"]
        if len(weighted) > 1:
            raise SwapError(
                f"listener {listener.get('Port')} splits traffic between "
                f"{len(weighted)} target groups; expected one forward target"
            )
    return None


def find_listeners(elbv2, lb_arn: str) -> tuple[Listener, Listener]:
    """(production, test): 8080 is test; production is 443, else 80, else the other one."""
    pages = elbv2.get_paginator("describe_listeners").paginate(LoadBalancerArn=lb_arn)
    listeners = [item for page in pages for item in page["Listeners"]]
    test = [item for item in listeners if item["Port"] == TEST_PORT]
    if not test:
        raise SwapError(f"the load balancer has no test listener on port {TEST_PORT}")
    forwarding = [item for item in listeners if item["Port"] != TEST_PORT and forward_target(item)]
    forwarding.sort(
        key=lambda item: (
            PRODUCTION_PORTS.index(item["Port"]) if item["Port"] in PRODUCTION_PORTS else 99
        )
    )
    if not forwarding:
        raise SwapError("the load balancer has no production listener that forwards (443/80)")
    test_target = forward_target(test[0])
    if not test_target:
        raise SwapError(f"the test listener ({TEST_PORT}) does not forward to a target group")
    prod = forwarding[0]
    return (
        Listener(prod["ListenerArn"], prod["Port"], forward_target(prod) or ""),
        Listener(test[0]["ListenerArn"], test[0]["Port"], test_target),
    )


def _tags(elbv2, arns: list[str]) -> dict[str, dict[str, str]]:
    result: dict[str, dict[str, str]] = {}
    for start in range(0, len(arns), 20):  # DescribeTags takes at most 20 ARNs
        chunk = arns[start : start + 20]
        for desc in elbv2.describe_tags(ResourceArns=chunk)["TagDescriptions"]:
            result[desc["ResourceArn"]] = {t["Key"]: t["Value"] for t in desc.get("Tags", [])}
    return result


def read_state(elbv2, name: str) -> AlbState | None:
    """The listeners, their target groups and tags; None when the load balancer is absent."""
    lb = find_load_balancer(elbv2, name)
    if lb is None:
        return None
    lb_arn = lb["LoadBalancerArn"]
    production, test = find_listeners(elbv2, lb_arn)
    lb_tags = _tags(elbv2, [lb_arn]).get(lb_arn, {})
    marker = {k: v for k, v in lb_tags.items() if k.startswith("swap-")}
    arns = list(dict.fromkeys([production.target_group_arn, test.target_group_arn]))
    tags = _tags(elbv2, arns)
    groups = {arn: TargetGroup(arn, tags.get(arn, {})) for arn in arns}
    # After an interrupted swap both listeners forward to one group: the intent
    # recorded on the load balancer still names the other one. (Listed after the
    # listeners' groups, so that by_color prefers those.)
    for key in (MARKER_PRODUCTION_TG, MARKER_TEST_TG):
        arn = marker.get(key)
        if arn and arn not in groups:
            try:
                groups[arn] = TargetGroup(arn, _tags(elbv2, [arn]).get(arn, {}))
            except ClientError:
                pass  # a stale record of a target group that no longer exists
    return AlbState(
        name=name,
        arn=lb_arn,
        dns_name=lb.get("DNSName", ""),
        production=production,
        test=test,
        groups=groups,
        marker=marker,
    )


def healthy_count(elbv2, tg_arn: str) -> int:
    health = elbv2.describe_target_health(TargetGroupArn=tg_arn)["TargetHealthDescriptions"]
    return sum(1 for item in health if item.get("TargetHealth", {}).get("State") == "healthy")


def describe_state(state: AlbState) -> str:
    prod, test = state.production_tg, state.test_tg
    return (
        f"production :{state.production.port} -> {prod.describe()} image={prod.image or '-'}"
        f" live-tag={prod.live or '-'}; "
        f"test :{state.test.port} -> {test.describe()} image={test.image or '-'}"
        f" live-tag={test.live or '-'}"
    )


# --------------------------------------------------------------------------- swapping


@dataclass
class SwapResult:
    live_color: str
    previous_color: str
    changed: bool
    message: str


def _point(elbv2, listener: Listener, tg_arn: str) -> None:
    elbv2.modify_listener(
        ListenerArn=listener.arn,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}],
    )


def _verify(elbv2, state: AlbState, prod_arn: str, test_arn: str, sleep, attempts=3) -> bool:
    for attempt in range(attempts):
        found = elbv2.describe_listeners(ListenerArns=[state.production.arn, state.test.arn])[
            "Listeners"
        ]
        by_arn = {item["ListenerArn"]: forward_target(item) for item in found}
        if by_arn.get(state.production.arn) == prod_arn and by_arn.get(state.test.arn) == test_arn:
            return True
        if attempt + 1 < attempts:
            sleep(1)
    return False


def _set_live_tags(elbv2, live: TargetGroup, idle: TargetGroup) -> None:
    # The idle one first: a reader never sees two groups tagged live=true.
    elbv2.add_tags(ResourceArns=[idle.arn], Tags=[{"Key": TAG_LIVE, "Value": "false"}])
    elbv2.add_tags(ResourceArns=[live.arn], Tags=[{"Key": TAG_LIVE, "Value": "true"}])


def _resolve_pair(state: AlbState, target_color: str) -> tuple[TargetGroup, TargetGroup]:
    target = state.by_color(target_color)
    other = state.by_color(other_color(target_color))
    if target is None or other is None:
        found = ", ".join(g.describe() for g in state.groups.values())
        raise SwapError(
            f"cannot find both a blue and a green target group behind the listeners "
            f"(found: {found}); check the target groups' '{TAG_COLOR}' tags"
        )
    return target, other


def swap(
    elbv2,
    load_balancer: str,
    *,
    job_id: str | None = None,
    to_color: str | None = None,
    expect_image: str | None = None,
    log: Log = _print,
    sleep: Callable[[float], None] = time.sleep,
) -> SwapResult:
    """Make `to_color` live (default: whatever the test listener serves now).

    With `expect_image`, refuse unless the target group to make live is tagged
    with that image (the release this run tested).

    Raises SwapError with the reason on refusal or failure; in every failure
    case production is left forwarding to the target group it had, unless the
    message says otherwise.
    """
    if to_color is not None and to_color not in COLORS:
        raise SwapError(f"--to-color must be one of {', '.join(COLORS)}, not {to_color!r}")
    state = read_state(elbv2, load_balancer)
    if state is None:
        raise SwapError(f"load balancer {load_balancer!r} does not exist: nothing to swap")
    log(f"before: {describe_state(state)}")

    marker = state.marker
    if job_id and marker.get(MARKER_JOB) == job_id and marker.get(MARKER_TARGET) in COLORS:
        target_color = marker[MARKER_TARGET]
        log(f"job {job_id} ran before and aimed at {target_color}: converging to it")
    elif to_color:
        target_color = to_color
    elif state.half_done:
        raise SwapError(
            f"production and test both forward to {state.production_tg.describe()}: an "
            f"earlier swap was interrupted. Pick the color to make live and run "
            f"`python -m pipeline.swap_lambda --load-balancer {load_balancer} --to-color COLOR`"
        )
    else:
        target_color = state.test_tg.color or ""
        if target_color not in COLORS:
            raise SwapError(
                f"the test target group {state.test_tg.name} has no valid "
                f"'{TAG_COLOR}' tag ({target_color!r})"
            )

    target, other = _resolve_pair(state, target_color)
    if expect_image is not None and target.image != expect_image:
        raise SwapError(
            f"refusing to swap: {target.describe()} runs image {target.image!r}, not this "
            f"run's {expect_image!r} (a later run deployed over it); production stays on "
            f"{state.production_tg.describe()}"
        )
    original_prod, original_test = state.production.target_group_arn, state.test.target_group_arn

    if original_prod == target.arn and original_test == other.arn:
        log(f"{target_color} is already live and {other.color} is on test: nothing to swap")
        if target.live != "true" or other.live != "false":
            _set_live_tags(elbv2, target, other)
            log("live tags corrected")
        return SwapResult(target_color, target_color, False, f"{target_color} is already live")

    healthy = healthy_count(elbv2, target.arn)
    if healthy == 0:
        raise SwapError(
            f"refusing to swap: target group {target.describe()} has no healthy targets; "
            f"production stays on {state.production_tg.describe()}"
        )
    log(f"{target.describe()} has {healthy} healthy target(s)")

    elbv2.add_tags(
        ResourceArns=[state.arn],
        Tags=[
            {"Key": MARKER_JOB, "Value": job_id or "manual"},
            {"Key": MARKER_TARGET, "Value": target_color},
            {"Key": MARKER_PRODUCTION_TG, "Value": target.arn},
            {"Key": MARKER_TEST_TG, "Value": other.arn},
        ],
    )

    step = "pointing production at " + target.describe()
    try:
        _point(elbv2, state.production, target.arn)
        log(f"production :{state.production.port} -> {target.describe()}")
        step = "pointing test at " + other.describe()
        _point(elbv2, state.test, other.arn)
        log(f"test :{state.test.port} -> {other.describe()}")
        step = "verifying the listeners"
        if not _verify(elbv2, state, target.arn, other.arn, sleep):
            raise SwapError("the listeners did not read back as swapped")
    except Exception as exc:
        reason = f"swap failed while {step}: {_why(exc)}"
        log(reason)
        raise SwapError(
            _undo(elbv2, state, original_prod, original_test, reason, log, sleep)
        ) from exc

    try:
        _set_live_tags(elbv2, target, other)
    except (ClientError, BotoCoreError) as exc:
        raise SwapError(
            f"listeners swapped and verified ({target_color} is live) but updating the "
            f"'{TAG_LIVE}' tags failed: {_why(exc)}; rerun the swap to fix the tags "
            f"(it will not swap again)"
        ) from exc
    previous = state.production_tg.color or other_color(target_color)
    message = f"{target_color} is live on :{state.production.port}, {other.color} is on test"
    log(f"done: {message}")
    return SwapResult(target_color, previous, True, message)


def _why(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'ClientError')}: {err.get('Message', exc)}"
    return str(exc) or type(exc).__name__


def _undo(elbv2, state, original_prod, original_test, reason, log, sleep) -> str:
    """Put both listeners back; return the message that tells where traffic is."""
    names = {arn: group.describe() for arn, group in state.groups.items()}
    try:
        _point(elbv2, state.production, original_prod)
        _point(elbv2, state.test, original_test)
        if not _verify(elbv2, state, original_prod, original_test, sleep):
            raise SwapError("the listeners did not read back as restored")
    except Exception as undo_exc:
        where = "unknown"
        try:
            now = read_state(elbv2, state.name)
            if now is not None:
                where = f"{now.production_tg.describe()}, "
                where += f"{healthy_count(elbv2, now.production.target_group_arn)} healthy"
        except Exception as read_exc:
            where = f"unknown ({_why(read_exc)})"
        message = (
            f"{reason}; ROLLBACK FAILED: {_why(undo_exc)}; production now forwards to "
            f"{where}. Fix by hand: python -m pipeline.swap_lambda --load-balancer "
            f"{state.name} --to-color COLOR"
        )
        log(message)
        return message
    message = (
        f"{reason}; rolled back: production forwards to {names[original_prod]} again, "
        f"test to {names[original_test]}"
    )
    log(message)
    return message


# --------------------------------------------------------------------------- Lambda


def _user_parameters(job: dict) -> dict:
    raw = (
        job.get("data", {})
        .get("actionConfiguration", {})
        .get("configuration", {})
        .get("UserParameters")
    )
    if not raw:
        return {}
    params = json.loads(raw)
    if not isinstance(params, dict):
        raise ValueError("UserParameters must be a JSON object")
    return params


def mark_promoted(ecr, repository: str, tag: str, log: Log = _print) -> None:
    """Tag the released image promoted-<tag>, so no lifecycle rule expires it.

    Best effort: the release is live either way; a failure is logged (the image
    is then protected only while it is among the newest).
    """
    promoted = PROMOTED_PREFIX + tag
    try:
        images = ecr.batch_get_image(repositoryName=repository, imageIds=[{"imageTag": tag}])
        if not images.get("images"):
            log(f"WARNING: image {repository}:{tag} not found; not marked {promoted}")
            return
        image = images["images"][0]
        params = {"imageManifest": image["imageManifest"]}
        if image.get("imageManifestMediaType"):
            params["imageManifestMediaType"] = image["imageManifestMediaType"]
        ecr.put_image(repositoryName=repository, imageTag=promoted, **params)
        log(f"image {repository}:{tag} marked {promoted}")
    except ClientError as exc:
        if _code_of(exc) in ("ImageAlreadyExistsException", "ImageTagAlreadyExistsException"):
            return  # marked by an earlier run
        log(f"WARNING: could not mark {repository}:{tag} {promoted}: {_why(exc)}")
    except BotoCoreError as exc:
        log(f"WARNING: could not mark {repository}:{tag} {promoted}: {_why(exc)}")


def _code_of(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def run_deployment(job: dict, s3=None) -> dict | None:
    """The run's deployment.json from the job's input artifact (DiscoverOutput), if it has one."""
    artifacts = job.get("data", {}).get("inputArtifacts") or []
    if not artifacts:
        return None
    location = artifacts[0]["location"]["s3Location"]
    if s3 is None:
        credentials = job["data"]["artifactCredentials"]
        s3 = boto3.client(
            "s3",
            aws_access_key_id=credentials["accessKeyId"],
            aws_secret_access_key=credentials["secretAccessKey"],
            aws_session_token=credentials["sessionToken"],
        )
    body = s3.get_object(Bucket=location["bucketName"], Key=location["objectKey"])["Body"].read()
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        deployment = json.loads(archive.read("deployment.json"))
    if deployment.get("TestColor") not in COLORS or not deployment.get("TestImageTag"):
        raise ValueError("deployment.json has no valid TestColor and TestImageTag")
    return deployment


def handler(event, context, *, elbv2=None, codepipeline=None, s3=None, ecr=None):
    """CodePipeline Lambda invoke action: swap, then report the job's result."""
    job = event.get("CodePipeline.job") if isinstance(event, dict) else None
    if not job:
        # A direct invocation (console test, operator): swap and return the outcome.
        name = (event or {}).get("load_balancer") or os.environ.get("LOAD_BALANCER_NAME")
        if not name:
            return {"ok": False, "message": "no load_balancer given"}
        try:
            result = swap(
                elbv2 or boto3.client("elbv2"), name, to_color=(event or {}).get("to_color")
            )
        except (SwapError, ClientError, BotoCoreError) as exc:
            return {"ok": False, "message": _why(exc)}
        return {"ok": True, "message": result.message, "live_color": result.live_color}

    job_id = job["id"]
    codepipeline = codepipeline or boto3.client("codepipeline")
    request_id = getattr(context, "aws_request_id", None)

    def fail(kind: str, message: str) -> dict:
        print(f"job {job_id} FAILED: {message}", flush=True)
        details = {"type": kind, "message": message[:MAX_FAILURE_MESSAGE]}
        if request_id:
            details["externalExecutionId"] = request_id
        codepipeline.put_job_failure_result(jobId=job_id, failureDetails=details)
        return {"ok": False, "message": message}

    try:
        params = _user_parameters(job)
    except (ValueError, TypeError) as exc:
        return fail("ConfigurationError", f"invalid UserParameters: {exc}")
    name = params.get("load_balancer") or os.environ.get("LOAD_BALANCER_NAME")
    if not name:
        return fail(
            "ConfigurationError",
            'no load balancer: set LOAD_BALANCER_NAME or UserParameters {"load_balancer": ...}',
        )
    try:
        deployment = run_deployment(job, s3)
    except (KeyError, ValueError, zipfile.BadZipFile, ClientError, BotoCoreError) as exc:
        return fail("JobFailed", f"cannot read this run's deployment.json: {_why(exc)}")
    target = (
        {"to_color": deployment["TestColor"], "expect_image": deployment["TestImageTag"]}
        if deployment
        else {}
    )
    try:
        result = swap(elbv2 or boto3.client("elbv2"), name, job_id=job_id, **target)
    except SwapError as exc:
        return fail("JobFailed", str(exc))
    except (ClientError, BotoCoreError) as exc:
        return fail("JobFailed", f"AWS error: {_why(exc)}")
    except Exception as exc:  # report, never leave the job hanging until it times out
        traceback.print_exc()
        return fail("JobFailed", f"unexpected error: {type(exc).__name__}: {exc}")
    repository = os.environ.get("REPOSITORY_NAME")
    if deployment and repository:
        mark_promoted(ecr or boto3.client("ecr"), repository, deployment["TestImageTag"])
    # If reporting success raises, the invocation errors and Lambda retries it:
    # the rerun finds this job's recorded target and converges without swapping back.
    codepipeline.put_job_success_result(
        jobId=job_id,
        executionDetails={"summary": result.message[:2048], "percentComplete": 100},
    )
    print(f"job {job_id} succeeded: {result.message}", flush=True)
    return {"ok": True, "message": result.message, "live_color": result.live_color}


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.swap_lambda",
        description=(
            "Swap the ALB's production and test listeners (blue/green), or roll back "
            "with --to-color. Refuses when the group to make live has no healthy targets; "
            "undoes a half-done swap."
        ),
        epilog="Exit codes: 0 swapped or already so, 1 refused or failed, 2 bad usage.",
    )
    parser.add_argument("--load-balancer", required=True, help="the ALB's name")
    parser.add_argument(
        "--to-color", choices=COLORS, help="make this color live (idempotent); default: swap"
    )
    parser.add_argument("--status", action="store_true", help="only show the current state")
    parser.add_argument("--region", help="AWS region (default: from the environment)")
    args = parser.parse_args(argv)
    elbv2 = boto3.client("elbv2", region_name=args.region)
    try:
        if args.status:
            state = read_state(elbv2, args.load_balancer)
            if state is None:
                print(f"load balancer {args.load_balancer!r} does not exist")
                return EXIT_FAILED
            print(describe_state(state))
            if state.half_done:
                print("WARNING: both listeners forward to the same target group")
            return EXIT_OK
        result = swap(elbv2, args.load_balancer, to_color=args.to_color)
    except SwapError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (ClientError, BotoCoreError) as exc:
        print(f"FAILED: AWS error: {_why(exc)}", file=sys.stderr)
        return EXIT_FAILED
    print(f"OK: {result.message}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
