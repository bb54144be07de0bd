"""Promote the test color (blue/green) to production through the release stack.

The Lambda behind the pipeline's "SwapListeners" action, and the operator's tool:

    python -m pipeline.swap_lambda --prefix chatsvc-production --status
    python -m pipeline.swap_lambda --prefix chatsvc-production --to-color blue   # roll back

The release stack (cloudformation/release.yaml) is the only owner of traffic: its
``LiveColor`` parameter decides where the production (443/80) and test (8080)
listeners forward, which target group is tagged ``live``, which image the worker
runs, and which template revision the load balancer and the worker use. A swap
never edits a listener; it updates that stack with ``LiveColor`` flipped and every
other parameter and the template unchanged. So a later deploy, or CloudFormation
rolling one back, re-applies what the swap made live instead of the release
before it, and a failed swap is rolled back by CloudFormation as a whole.

A swap, step by step:

1. reads the release stack: it must be stable (not mid-update) and the color to
   make live must run the image this run tested (``TestImageTag``), else it
   refuses; if that color is live already it changes nothing (a retry);
2. matches capacity: the color to make live is scaled to at least the live
   color's desired count and waits until all its desired tasks run and are
   healthy in its target group (refusing after ``CAPACITY_WAIT_SECONDS``);
3. updates the stack (``LiveColor`` only) and waits for UPDATE_COMPLETE;
4. reads the listeners back: production must forward to the new color;
5. in the pipeline, bakes: for ``BAKE_SECONDS`` it watches the live color's
   alarms (``ALARM_PREFIX``*, which the same stack update pointed at the new
   color); if one goes to ALARM it swaps back the same way and fails the job.

In CodePipeline the waits span invocations through continuation tokens; the
token carries the phase, so any invocation (a Lambda retry, a CodePipeline retry
with a new job id) converges instead of swapping back. This module must only
need boto3 (it is deployed alone as ``swap_lambda.py`` at the root of a zip,
handler ``swap_lambda.handler``); keep it self-contained.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import sys
import time
import traceback
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

TEST_PORT = 8080
PRODUCTION_PORTS = (443, 80)  # preferred order
COLORS = ("blue", "green")
TAG_COLOR = "color"
TAG_LIVE = "live"
TAG_IMAGE = "image"
TAG_TEMPLATES = "templates"
MAX_FAILURE_MESSAGE = 5000  # CodePipeline FailureDetails.message limit
PROMOTED_PREFIX = "promoted-"  # ECR's lifecycle policy keeps these (cloudformation/ecr.yaml)
CAPACITY_WAIT_SECONDS = 15 * 60
# The swap retargets the live alarms in place; each keeps its old state until its
# next evaluation. Within this grace only an alarm that changed state since the
# swap counts, so the previous color's alarm cannot roll back its own fix.
ALARM_GRACE_SECONDS = 120
POLL_SECONDS = 10
# A stack the swap may update; anything else is mid-change or broken.
STABLE = ("CREATE_COMPLETE", "UPDATE_COMPLETE", "UPDATE_ROLLBACK_COMPLETE")
UPDATING = (
    "UPDATE_IN_PROGRESS",
    "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
)

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

    @property
    def templates(self) -> str:
        return self.tags.get(TAG_TEMPLATES, "").strip()

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
    groups: dict[str, TargetGroup]  # by ARN: the listeners' target groups

    @property
    def production_tg(self) -> TargetGroup:
        return self.groups[self.production.target_group_arn]

    @property
    def test_tg(self) -> TargetGroup:
        return self.groups[self.test.target_group_arn]

    @property
    def half_done(self) -> bool:
        """Both listeners forward to the same target group (edited by hand)."""
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
    arns = list(dict.fromkeys([production.target_group_arn, test.target_group_arn]))
    tags = _tags(elbv2, arns)
    groups = {arn: TargetGroup(arn, tags.get(arn, {})) for arn in arns}
    return AlbState(
        name=name,
        arn=lb_arn,
        dns_name=lb.get("DNSName", ""),
        production=production,
        test=test,
        groups=groups,
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


# --------------------------------------------------------------------------- the release


@dataclass(frozen=True)
class Config:
    """Names of what a swap reads and changes (the Lambda's environment)."""

    load_balancer: str
    stack: str
    cluster: str
    service_prefix: str  # web services are <service_prefix>-blue / -green
    role_arn: str = ""  # the role CloudFormation deploys the release stack with
    alarm_prefix: str = ""  # the live color's alarms (cloudformation/alarms.yaml)
    bake_seconds: int = 0  # after a swap, roll back if one of them fires within this

    @classmethod
    def from_prefix(cls, prefix: str, role_arn: str = "") -> Config:
        """The names cloudformation/ derives from the platform's Prefix."""
        return cls(prefix, f"{prefix}-release", prefix, f"{prefix}-web", role_arn)

    @classmethod
    def from_env(cls, overrides: dict | None = None) -> Config:
        values = {
            "load_balancer": os.environ.get("LOAD_BALANCER_NAME", ""),
            "stack": os.environ.get("RELEASE_STACK_NAME", ""),
            "cluster": os.environ.get("CLUSTER_NAME", ""),
            "service_prefix": os.environ.get("SERVICE_PREFIX", ""),
            "role_arn": os.environ.get("RELEASE_ROLE_ARN", ""),
            "alarm_prefix": os.environ.get("ALARM_PREFIX", ""),
        }
        values.update({k: v for k, v in (overrides or {}).items() if k in values and v})
        missing = [k for k, v in values.items() if not v and k not in ("role_arn", "alarm_prefix")]
        if missing:
            raise ValueError(f"missing configuration: {', '.join(missing)}")
        bake = int(os.environ.get("BAKE_SECONDS") or 0)
        if bake < 0 or (bake and not values["alarm_prefix"]):
            raise ValueError("BAKE_SECONDS must be >= 0 and needs ALARM_PREFIX")
        return cls(**values, bake_seconds=bake)

    def service(self, color: str) -> str:
        return f"{self.service_prefix}-{color}"


@dataclass
class Release:
    """The release stack as CloudFormation records it."""

    name: str
    status: str
    reason: str
    parameters: dict[str, str]
    last_updated: str

    @property
    def live_color(self) -> str:
        return self.parameters.get("LiveColor", "")

    def image(self, color: str) -> str:
        return self.parameters.get(f"{color.capitalize()}ImageTag", "")


def read_release(cfn, name: str) -> Release:
    try:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    except ClientError as exc:
        if _code_of(exc) == "ValidationError" and "does not exist" in str(exc):
            raise SwapError(
                f"release stack {name!r} does not exist: nothing is deployed yet"
            ) from exc
        raise
    return Release(
        name=name,
        status=stack["StackStatus"],
        reason=stack.get("StackStatusReason", ""),
        parameters={p["ParameterKey"]: p.get("ParameterValue", "") for p in stack["Parameters"]},
        last_updated=str(stack.get("LastUpdatedTime") or stack.get("CreationTime", "")),
    )


def first_failure(cfn, name: str) -> str:
    """The first FAILED reason of the stack's latest update (events come newest first)."""
    first = "no failure reason recorded"
    for event in cfn.describe_stack_events(StackName=name)["StackEvents"]:
        status = event.get("ResourceStatus", "")
        if event.get("LogicalResourceId") == name and status == "UPDATE_IN_PROGRESS":
            break  # where the update began
        if status.endswith("_FAILED") and event.get("ResourceStatusReason"):
            first = f"{event['LogicalResourceId']}: {event['ResourceStatusReason']}"
    return first


# --------------------------------------------------------------------------- capacity


def capacity(ecs, elbv2, config: Config, target: str, live: str, target_tg: str, log: Log) -> str:
    """'' when `target` can take production's load; else what it is waiting for.

    Scales `target` up to the live color's desired count first (never down):
    a color that sat at its minimum on the test listener must not take the
    traffic of a live color that autoscaling has grown.
    """
    services = ecs.describe_services(
        cluster=config.cluster, services=[config.service(target), config.service(live)]
    )
    by_name = {s["serviceName"]: s for s in services["services"]}
    mine, theirs = by_name.get(config.service(target)), by_name.get(config.service(live))
    if mine is None:
        raise SwapError(f"service {config.service(target)} not found in {config.cluster}")
    wanted = max(mine["desiredCount"], theirs["desiredCount"] if theirs else 0, 1)
    if mine["desiredCount"] < wanted:
        ecs.update_service(
            cluster=config.cluster, service=config.service(target), desiredCount=wanted
        )
        log(f"scaled {config.service(target)} from {mine['desiredCount']} to {wanted} tasks")
        return f"{config.service(target)} is starting {wanted - mine['desiredCount']} task(s)"
    if len(mine.get("deployments", [])) > 1:
        return f"{config.service(target)} is still deploying"
    healthy = healthy_count(elbv2, target_tg)
    if mine.get("runningCount", 0) < wanted or healthy < wanted:
        return (
            f"{config.service(target)}: {mine.get('runningCount', 0)} running, "
            f"{healthy} healthy of {wanted} wanted"
        )
    log(f"{config.service(target)}: {healthy} healthy of {wanted} wanted")
    return ""


def firing_alarms(cloudwatch, prefix: str) -> dict[str, float]:
    """The alarms under `prefix` in ALARM now: name -> when their state last changed."""
    if cloudwatch is None or not prefix:
        return {}
    pages = cloudwatch.get_paginator("describe_alarms").paginate(
        AlarmNamePrefix=prefix,
        StateValue="ALARM",
        AlarmTypes=["MetricAlarm", "CompositeAlarm"],
    )
    return {
        alarm["AlarmName"]: alarm["StateUpdatedTimestamp"].timestamp()
        for page in pages
        for alarm in page.get("MetricAlarms", []) + page.get("CompositeAlarms", [])
        if alarm.get("StateValue") == "ALARM"  # the filter again: cheap, and exact
    }


# --------------------------------------------------------------------------- swapping


@dataclass
class Step:
    """The outcome of one pass: done (with a message), or a phase to come back to."""

    message: str
    done: bool = False
    changed: bool = False
    token: dict = field(default_factory=dict)  # what the next pass needs


@dataclass
class Swap:
    """One swap to `target` (optionally: only if it runs `expect_image`)."""

    config: Config
    cfn: object
    ecs: object
    elbv2: object
    target: str
    expect_image: str | None = None
    request_token: str = ""  # makes UpdateStack idempotent for this job
    cloudwatch: object = None  # for the bake (Config.bake_seconds)
    log: Log = _print
    clock: Callable[[], float] = time.time

    def advance(self, token: dict | None = None) -> Step:
        """Do what can be done now; raise SwapError when refused or failed."""
        token = token or {}
        release = read_release(self.cfn, self.config.stack)
        phase = token.get("phase", "start")
        if phase == "stack":
            return self._await_stack(release, token)
        if phase == "bake":
            return self._bake(release, token)
        if phase == "rollback":
            return self._await_rollback(release, token)
        if release.live_color == self.target and release.status in STABLE:
            return self._verified(release, f"{self.target} is already live", changed=False)
        if release.status in UPDATING and release.live_color == self.target:
            # a rerun after the update started
            return self._await_stack(release, {"previous": other_color(self.target)})
        if release.status not in STABLE:
            raise SwapError(
                f"the release stack is {release.status}, not stable: refusing to swap; "
                f"production stays on {release.live_color}"
            )
        if self.expect_image is not None and release.image(self.target) != self.expect_image:
            raise SwapError(
                f"refusing to swap: {self.target} runs image {release.image(self.target)!r}, "
                f"not this run's {self.expect_image!r} (a later run deployed over it); "
                f"production stays on {release.live_color}"
            )
        deadline = token.get("deadline") or self.clock() + CAPACITY_WAIT_SECONDS
        state = self._alb()
        target_tg = state.by_color(self.target)
        if target_tg is None:
            raise SwapError(f"no target group tagged color={self.target}")
        waiting = capacity(
            self.ecs,
            self.elbv2,
            self.config,
            self.target,
            release.live_color,
            target_tg.arn,
            self.log,
        )
        if waiting:
            if self.clock() > deadline:
                raise SwapError(
                    f"refusing to swap: {waiting} after {CAPACITY_WAIT_SECONDS // 60} min; "
                    f"production stays on {release.live_color}"
                )
            return Step(
                f"waiting for capacity: {waiting}",
                token={
                    "phase": "capacity",
                    "deadline": deadline,
                },
            )
        self._update_stack(release, self.target, self.request_token)
        return Step(
            f"updating {self.config.stack}: LiveColor {release.live_color} -> {self.target}",
            token={"phase": "stack", "previous": release.live_color},
        )

    def _alb(self) -> AlbState:
        state = read_state(self.elbv2, self.config.load_balancer)
        if state is None:
            raise SwapError(f"load balancer {self.config.load_balancer!r} does not exist")
        return state

    def _update_stack(self, release: Release, color: str, request_token: str) -> None:
        parameters = [
            {"ParameterKey": key, "UsePreviousValue": True}
            for key in release.parameters
            if key != "LiveColor"
        ]
        parameters.append({"ParameterKey": "LiveColor", "ParameterValue": color})
        request = {
            "StackName": self.config.stack,
            "UsePreviousTemplate": True,
            "Parameters": parameters,
        }
        if self.config.role_arn:
            request["RoleArn"] = self.config.role_arn
        if request_token:
            request["ClientRequestToken"] = request_token
        self.log(f"updating {self.config.stack}: LiveColor {release.live_color} -> {color}")
        self.cfn.update_stack(**request)

    def _await_stack(self, release: Release, token: dict) -> Step:
        if release.status in UPDATING:
            token = {**token, "phase": "stack"}
            return Step(f"{self.config.stack} is {release.status}", token=token)
        if release.status == "UPDATE_COMPLETE" and release.live_color == self.target:
            done = self._verified(release, f"{self.target} is live", changed=True)
            if not self.config.bake_seconds:
                return done
            return Step(
                f"{self.target} is live; baking {self.config.bake_seconds} s, rolling back "
                f"if an alarm {self.config.alarm_prefix}* fires",
                token={
                    "phase": "bake",
                    "previous": token.get("previous") or other_color(self.target),
                    "since": self.clock(),
                    "until": self.clock() + self.config.bake_seconds,
                },
            )
        reason = first_failure(self.cfn, self.config.stack)
        raise SwapError(
            f"the swap's stack update ended {release.status} ({reason}); CloudFormation "
            f"rolled it back: production stays on {release.live_color or 'the live color'}"
        )

    def _bake(self, release: Release, token: dict) -> Step:
        """Watch the live alarms; on the first one in ALARM, swap back."""
        now, since = self.clock(), token["since"]
        firing = sorted(
            name
            for name, changed in firing_alarms(self.cloudwatch, self.config.alarm_prefix).items()
            if changed > since or now >= since + ALARM_GRACE_SECONDS
        )
        previous = token["previous"]
        if firing:
            self.log(f"alarm(s) in ALARM: {', '.join(firing)}; rolling back to {previous}")
            rollback_token = f"{self.request_token}-rollback" if self.request_token else ""
            self._update_stack(release, previous, rollback_token[:128])
            return Step(
                f"alarm(s) {', '.join(firing)} fired: rolling back to {previous}",
                token={"phase": "rollback", "previous": previous, "alarms": firing},
            )
        left = token["until"] - now
        if left <= 0:
            return Step(
                f"{self.target} is live (baked {self.config.bake_seconds} s, no alarm)",
                done=True,
                changed=True,
            )
        return Step(f"baking: {int(left)} s left, no alarm", token=token)

    def _await_rollback(self, release: Release, token: dict) -> Step:
        previous, alarms = token["previous"], ", ".join(token["alarms"])
        if release.status in UPDATING:
            return Step(f"rolling back to {previous}: {release.status}", token=token)
        if release.status == "UPDATE_COMPLETE" and release.live_color == previous:
            self._verified(release, f"{previous} is live again", changed=True, color=previous)
            raise SwapError(
                f"rolled back: {alarms} fired within {self.config.bake_seconds} s of the "
                f"swap to {self.target}, so {previous} is live again; the release stays "
                f"on the test listener to look at"
            )
        reason = first_failure(self.cfn, self.config.stack)
        raise SwapError(
            f"{alarms} fired after the swap to {self.target}, and the rollback to "
            f"{previous} ended {release.status} ({reason}): production may still be on "
            f"{self.target}; check with --status and roll back with --to-color {previous}"
        )

    def _verified(self, release: Release, message: str, *, changed: bool, color: str = "") -> Step:
        """Done, once the listeners agree that `color` (default: the target) is live."""
        color = color or self.target
        state = self._alb()
        if state.live_color != color or state.test_color != other_color(color):
            raise SwapError(
                f"the release stack says {release.live_color} is live but the listeners "
                f"say: {describe_state(state)}. Someone changed them outside "
                f"CloudFormation; detect drift on {self.config.stack} and update it"
            )
        self.log(f"done: {message}; {describe_state(state)}")
        return Step(message, done=True, changed=changed)

    def run(self, *, sleep: Callable[[float], None] = time.sleep) -> Step:
        """Advance until done (the CLI); SwapError when refused or failed."""
        step = self.advance()
        while not step.done:
            self.log(step.message)
            sleep(POLL_SECONDS)
            step = self.advance(step.token)
        return step


def _why(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', 'ClientError')}: {err.get('Message', exc)}"
    return str(exc) or type(exc).__name__


def _code_of(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


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


def run_deployment(job: dict, s3=None) -> dict:
    """The run's deployment.json from the job's input artifact (DiscoverOutput)."""
    artifacts = job.get("data", {}).get("inputArtifacts") or []
    if not artifacts:
        raise ValueError("the action has no input artifact (DiscoverOutput)")
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


def _continuation(job: dict) -> dict:
    raw = job.get("data", {}).get("continuationToken")
    return json.loads(raw) if raw else {}


def _budget(context, cap: float) -> float:
    """Seconds this invocation may keep polling, leaving room to report."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if remaining is None:
        return 0.0
    return max(0.0, min(cap, remaining() / 1000 - 30))


def handler(event, context, *, clients=None, codepipeline=None, s3=None, sleep=time.sleep):
    """CodePipeline Lambda invoke action: advance the swap, report, or continue later."""
    clients = clients or {}

    def client(name):
        return clients.get(name) or boto3.client(name)

    job = event.get("CodePipeline.job") if isinstance(event, dict) else None
    if not job:
        return _direct(event or {}, client)

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
        config = Config.from_env(_user_parameters(job))
    except (ValueError, TypeError) as exc:
        return fail("ConfigurationError", f"invalid configuration: {exc}")
    try:
        deployment = run_deployment(job, s3)
        token = _continuation(job)
    except (KeyError, ValueError, zipfile.BadZipFile, ClientError, BotoCoreError) as exc:
        return fail("JobFailed", f"cannot read this run's deployment.json: {_why(exc)}")
    swap = Swap(
        config,
        client("cloudformation"),
        client("ecs"),
        client("elbv2"),
        target=deployment["TestColor"],
        expect_image=deployment["TestImageTag"],
        request_token=f"swap-{job_id}"[:100],
        cloudwatch=client("cloudwatch"),
    )
    deadline = time.monotonic() + _budget(context, 240)
    try:
        step = swap.advance(token)
        while not step.done and time.monotonic() + POLL_SECONDS < deadline:
            sleep(POLL_SECONDS)
            step = swap.advance(step.token)
    except SwapError as exc:
        return fail("JobFailed", str(exc))
    except (ClientError, BotoCoreError) as exc:
        return fail("JobFailed", f"AWS error: {_why(exc)}")
    except Exception as exc:  # report, never leave the job hanging until it times out
        traceback.print_exc()
        return fail("JobFailed", f"unexpected error: {type(exc).__name__}: {exc}")

    if not step.done:
        # CodePipeline invokes the action again with this token; the phase in it
        # makes the next invocation wait, never start a second update.
        codepipeline.put_job_success_result(
            jobId=job_id,
            continuationToken=json.dumps(step.token),
            executionDetails={"summary": step.message[:2048]},
        )
        print(f"job {job_id} continues: {step.message}", flush=True)
        return {"ok": True, "message": step.message, "pending": True, "token": step.token}
    repository = os.environ.get("REPOSITORY_NAME")
    if repository:
        mark_promoted(client("ecr"), repository, deployment["TestImageTag"])
    codepipeline.put_job_success_result(
        jobId=job_id,
        executionDetails={"summary": step.message[:2048], "percentComplete": 100},
    )
    print(f"job {job_id} succeeded: {step.message}", flush=True)
    return {"ok": True, "message": step.message, "live_color": swap.target}


def code_sha256() -> str:
    """The SHA-256 of this very file: Discover compares it with the bundle's copy."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _direct(event: dict, client) -> dict:
    """A direct invocation (console test, operator): one pass towards `to_color`;
    ``{"action": "version"}`` answers which code runs."""
    if event.get("action") == "version":
        return {"ok": True, "sha256": code_sha256()}
    to_color = event.get("to_color")
    if to_color not in COLORS:
        return {"ok": False, "message": f"to_color must be one of {', '.join(COLORS)}"}
    try:
        # An operator's move (a rollback, usually): no bake, it would only delay it.
        config = dataclasses.replace(Config.from_env(event), bake_seconds=0)
        swap = Swap(config, client("cloudformation"), client("ecs"), client("elbv2"), to_color)
        step = swap.advance(event.get("token"))
    except (ValueError, SwapError, ClientError, BotoCoreError) as exc:
        return {"ok": False, "message": _why(exc)}
    return {"ok": True, "message": step.message, "done": step.done, "token": step.token}


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.swap_lambda",
        description=(
            "Show which color is live, or make a color live (a rollback) through the "
            "release stack: matches capacity, updates LiveColor, waits, verifies."
        ),
        epilog="Exit codes: 0 done or already so, 1 refused or failed, 2 bad usage.",
    )
    parser.add_argument(
        "--prefix", required=True, help="the platform's Prefix, e.g. chatsvc-production"
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--to-color", choices=COLORS, help="make this color live (idempotent)")
    action.add_argument("--status", action="store_true", help="only show the current state")
    parser.add_argument(
        "--role-arn", default="", help="the release deploy role (default: the stack's)"
    )
    parser.add_argument("--region", help="AWS region (default: from the environment)")
    args = parser.parse_args(argv)
    config = Config.from_prefix(args.prefix, args.role_arn)
    session = boto3.session.Session(region_name=args.region)
    elbv2 = session.client("elbv2")
    try:
        if args.status:
            release = read_release(session.client("cloudformation"), config.stack)
            state = read_state(elbv2, config.load_balancer)
            print(
                f"{release.name}: {release.status}, LiveColor={release.live_color}, "
                f"blue={release.image('blue')}, green={release.image('green')}"
            )
            print(describe_state(state) if state else "no load balancer")
            return EXIT_OK
        swap = Swap(
            config, session.client("cloudformation"), session.client("ecs"), elbv2, args.to_color
        )
        step = swap.run()
    except SwapError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (ClientError, BotoCoreError) as exc:
        print(f"FAILED: AWS error: {_why(exc)}", file=sys.stderr)
        return EXIT_FAILED
    print(f"OK: {step.message}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
