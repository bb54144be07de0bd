"""Tell which color is live and write the deploy action's parameters.

    python -m pipeline.deployment_tags --load-balancer NAME --image-tag TAG \
        --template-prefix PREFIX --out deployment.json
    python -m pipeline.deployment_tags --load-balancer NAME --image-json image.json \
        --templates-json templates.json --out ...

Reads the ALB's production (443/80) and test (8080) listeners, the target groups
they forward to and those groups' tags (``color``, ``live``, ``image``,
``templates``), and
writes a flat JSON object of strings that the CloudFormation deploy action reads
with ``Fn::GetParam``:

    LiveColor, TestColor           blue | green
    LiveImageTag                   the image production serves now
    TestImageTag                   the new image (deployed to the test color)
    BlueImageTag, GreenImageTag    the test color's is the new tag; the live one keeps its own
    BlueTemplatePrefix,            the template revision (S3 prefix) each color's web service
    GreenTemplatePrefix            runs: the test color's is this run's; the live one keeps
                                   its own, so a template change never reaches production
                                   before approval (the swap moves the rest with LiveColor)
    LiveTargetGroupArn, TestTargetGroupArn
    FirstDeployment                "true" | "false"

First deployment (no load balancer yet, or the live target group carries no
image tag yet): both colors get the new tag and templates, blue is live and
green is test; the ARNs are empty strings when there is no load balancer. A live
target group without a ``templates`` tag (released before colors had their own
template revision) gets this run's templates too, once, with a note.

With ``--swap-function``, the swap Lambda is asked which code it runs first
(``{"action": "version"}``): a bundle uploaded without rolling out its Lambda
would otherwise approve one swap logic and run another.

With ``--release-stack``, the release stack is checked first: one left in
ROLLBACK_COMPLETE by a failed first create holds no resources and blocks every
later deploy (CloudFormation can only delete it), so it is deleted here; a stack
in any other failed or busy state stops the release with what to do.

Exit codes: 0 written, 1 the load balancer or the release stack is in a state no
release should start from (listeners edited by hand, missing tags, a failed
stack), 2 bad usage, 4 AWS error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from pipeline import EXIT_AWS_ERROR, EXIT_FAILED, EXIT_OK, EXIT_USAGE, swap_lambda
from pipeline.swap_lambda import COLORS, AlbState, SwapError, read_state

# An ECR tag: up to 128 chars of letters, digits, _ . -, not starting with . or -
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
# An S3 key prefix that ends in "/", as a target group tag value can hold it (256)
PREFIX_RE = re.compile(r"^[A-Za-z0-9!_.*'()/-]{1,255}/$")
KEYS = (
    "LiveColor",
    "TestColor",
    "LiveImageTag",
    "TestImageTag",
    "BlueImageTag",
    "GreenImageTag",
    "BlueTemplatePrefix",
    "GreenTemplatePrefix",
    "LiveTargetGroupArn",
    "TestTargetGroupArn",
    "FirstDeployment",
)


class DiscoveryError(Exception):
    """The load balancer is in a state a release must not start from."""


def first_deployment(image_tag: str, templates: str, state: AlbState | None) -> dict[str, str]:
    blue = state.by_color("blue") if state else None
    green = state.by_color("green") if state else None
    return {
        "LiveColor": "blue",
        "TestColor": "green",
        "LiveImageTag": image_tag,
        "TestImageTag": image_tag,
        "BlueImageTag": image_tag,
        "GreenImageTag": image_tag,
        "BlueTemplatePrefix": templates,
        "GreenTemplatePrefix": templates,
        "LiveTargetGroupArn": blue.arn if blue else "",
        "TestTargetGroupArn": green.arn if green else "",
        "FirstDeployment": "true",
    }


def discover(
    elbv2, load_balancer: str, image_tag: str, templates: str
) -> tuple[dict[str, str], list[str]]:
    """(the deployment parameters, notes for the log); `templates` is this run's prefix."""
    notes: list[str] = []
    try:
        state = read_state(elbv2, load_balancer)
    except SwapError as exc:
        raise DiscoveryError(str(exc)) from exc
    if state is None:
        notes.append(f"load balancer {load_balancer!r} does not exist yet: first deployment")
        return first_deployment(image_tag, templates, None), notes

    if state.half_done:
        raise DiscoveryError(
            f"production and test both forward to {state.production_tg.describe()}: the "
            f"listeners were changed outside CloudFormation. Put them back where the "
            f"release stack's LiveColor says (docs/deployment.md, 'Listeners changed by "
            f"hand') and retry this stage"
        )
    live, test = state.production_tg, state.test_tg
    for group, role in ((live, "production"), (test, "test")):
        if group.color not in COLORS:
            raise DiscoveryError(
                f"the {role} target group {group.name} has no valid 'color' tag "
                f"({group.color!r}); expected blue or green"
            )
    if live.color == test.color:
        raise DiscoveryError(f"both target groups are tagged color={live.color}")
    if live.live != "true" or test.live != "false":
        notes.append(
            f"WARNING: live tags disagree with the listeners (production {live.color} "
            f"live={live.live!r}, test {test.color} live={test.live!r}); the listeners win"
        )
    if not live.image:
        notes.append(
            f"the live target group {live.describe()} carries no image tag: first deployment"
        )
        return first_deployment(image_tag, templates, state), notes

    live_templates = live.templates
    if not live_templates:
        notes.append(
            f"the live target group {live.describe()} carries no templates tag: both colors "
            f"take this run's templates (once; from now on only the test color does)"
        )
        live_templates = templates
    params = {
        "LiveColor": live.color,
        "TestColor": test.color,
        "LiveImageTag": live.image,
        "TestImageTag": image_tag,
        f"{live.color.capitalize()}ImageTag": live.image,
        f"{test.color.capitalize()}ImageTag": image_tag,
        f"{live.color.capitalize()}TemplatePrefix": live_templates,
        f"{test.color.capitalize()}TemplatePrefix": templates,
        "LiveTargetGroupArn": live.arn,
        "TestTargetGroupArn": test.arn,
        "FirstDeployment": "false",
    }
    if live.image == image_tag:
        notes.append(f"note: image {image_tag} is already live on {live.color} (a redeploy)")
    return {key: params[key] for key in KEYS}, notes


BUSY_OR_FAILED = (
    "CREATE_IN_PROGRESS",
    "UPDATE_IN_PROGRESS",
    "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS",
    "UPDATE_ROLLBACK_IN_PROGRESS",
    "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
    "ROLLBACK_IN_PROGRESS",
    "DELETE_IN_PROGRESS",
    "CREATE_FAILED",
    "ROLLBACK_FAILED",
    "DELETE_FAILED",
    "UPDATE_ROLLBACK_FAILED",
    "UPDATE_FAILED",
)


def prepare_release_stack(cfn, name: str) -> list[str]:
    """Clear a failed first create; refuse a stack that is busy or failed (notes)."""
    try:
        stack = cfn.describe_stacks(StackName=name)["Stacks"][0]
    except ClientError as exc:
        if "does not exist" in str(exc):
            return [f"release stack {name} does not exist yet: the deploy creates it"]
        raise
    status = stack["StackStatus"]
    if status == "ROLLBACK_COMPLETE":
        # Only a failed create ends here, and its rollback deleted every resource.
        cfn.delete_stack(StackName=name)
        cfn.get_waiter("stack_delete_complete").wait(
            StackName=name, WaiterConfig={"Delay": 5, "MaxAttempts": 120}
        )
        return [
            f"deleted release stack {name}: a failed first create left it in "
            f"ROLLBACK_COMPLETE, holding no resources; the deploy creates it again"
        ]
    if status == "UPDATE_ROLLBACK_FAILED":
        raise DiscoveryError(
            f"release stack {name} is UPDATE_ROLLBACK_FAILED: fix the resource named in "
            f"its events, then `aws cloudformation continue-update-rollback --stack-name "
            f"{name}` (docs/deployment.md) and retry this stage"
        )
    if status in BUSY_OR_FAILED:
        raise DiscoveryError(
            f"release stack {name} is {status}: wait for it to finish (or read its "
            f"events if it failed), then retry this stage"
        )
    return []


def check_swap_function(lambda_client, name: str) -> list[str]:
    """Refuse a release whose swap Lambda runs other code than this bundle's."""
    response = lambda_client.invoke(
        FunctionName=name, Payload=json.dumps({"action": "version"}).encode()
    )
    answer = json.loads(response["Payload"].read() or b"{}")
    deployed, bundled = answer.get("sha256"), swap_lambda.code_sha256()
    if response.get("FunctionError") or not deployed:
        raise DiscoveryError(f"swap Lambda {name} did not say which code it runs: {answer}")
    if deployed != bundled:
        raise DiscoveryError(
            f"swap Lambda {name} runs code {deployed[:12]}, this bundle holds "
            f"{bundled[:12]}: the bundle was uploaded without rolling out its Lambda. "
            f"Update the platform stack with the new SwapLambdaObjectVersion "
            f"(docs/deployment.md, step 2) and retry this stage"
        )
    return [f"swap Lambda {name} runs this bundle's code ({bundled[:12]})"]


def read_json_field(path: str, key: str) -> str:
    data = json.loads(Path(path).read_text())
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{path} has no {key!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.deployment_tags",
        description=(
            "Read which target group (blue/green) the ALB's production and test listeners "
            "forward to and write deployment.json for the deploy action."
        ),
        epilog="Exit codes: 0 written, 1 unsafe state, 2 bad usage, 4 AWS error.",
    )
    parser.add_argument("--load-balancer", required=True, help="the ALB's name")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--image-tag", help="the new image tag (for the test service)")
    source.add_argument("--image-json", help="the build's image.json to read the tag from")
    templates = parser.add_mutually_exclusive_group(required=True)
    templates.add_argument(
        "--template-prefix", help="this run's published templates (S3 key prefix ending in /)"
    )
    templates.add_argument(
        "--templates-json", help="the PublishTemplates artifact's templates.json to read it from"
    )
    parser.add_argument(
        "--release-stack", help="check (and clear a failed first create of) this stack first"
    )
    parser.add_argument(
        "--swap-function", help="check that this swap Lambda runs this bundle's code"
    )
    parser.add_argument("--out", required=True, help="where to write the JSON")
    parser.add_argument("--region", help="AWS region (default: from the environment)")
    args = parser.parse_args(argv)

    try:
        tag = args.image_tag if args.image_json is None else read_json_field(args.image_json, "tag")
    except (OSError, ValueError) as exc:
        print(f"ERROR: cannot read the image tag: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not TAG_RE.match(tag):
        print(f"ERROR: {tag!r} is not a valid image tag", file=sys.stderr)
        return EXIT_USAGE
    try:
        prefix = (
            args.template_prefix
            if args.templates_json is None
            else read_json_field(args.templates_json, "TemplatePrefix")
        )
    except (OSError, ValueError) as exc:
        print(f"ERROR: cannot read the template prefix: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not PREFIX_RE.match(prefix):
        print(
            f"ERROR: {prefix!r} is not a template prefix (an S3 key prefix ending in /)",
            file=sys.stderr,
        )
        return EXIT_USAGE

    try:
        notes = []
        if args.swap_function:
            notes += check_swap_function(
                boto3.client("lambda", region_name=args.region), args.swap_function
            )
        if args.release_stack:
            cfn = boto3.client("cloudformation", region_name=args.region)
            notes += prepare_release_stack(cfn, args.release_stack)
        params, found = discover(
            boto3.client("elbv2", region_name=args.region), args.load_balancer, tag, prefix
        )
        notes += found
    except DiscoveryError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (ClientError, BotoCoreError) as exc:
        print(f"FAILED: AWS error reading {args.load_balancer}: {exc}", file=sys.stderr)
        return EXIT_AWS_ERROR

    for note in notes:
        print(note)
    width = max(len(k) for k in KEYS)
    for key in KEYS:
        print(f"  {key:<{width}}  {params[key]}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(params, indent=2) + "\n")
    tmp.replace(out)
    print(f"wrote {out}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
