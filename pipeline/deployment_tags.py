"""Tell which color is live and write the deploy action's parameters.

    python -m pipeline.deployment_tags --load-balancer NAME --image-tag TAG --out deployment.json
    python -m pipeline.deployment_tags --load-balancer NAME --image-json image.json --out ...

Reads the ALB's production (443/80) and test (8080) listeners, the target groups
they forward to and those groups' tags (``color``, ``live``, ``image``), and
writes a flat JSON object of strings that the CloudFormation deploy action reads
with ``Fn::GetParam``:

    LiveColor, TestColor           blue | green
    LiveImageTag                   the image production serves now
    TestImageTag                   the new image (deployed to the test color)
    BlueImageTag, GreenImageTag    the test color's is the new tag; the live one keeps its own
    LiveTargetGroupArn, TestTargetGroupArn
    FirstDeployment                "true" | "false"

First deployment (no load balancer yet, or the live target group carries no
image tag yet): both colors get the new tag, blue is live and green is test; the
ARNs are empty strings when there is no load balancer.

Exit codes: 0 written, 1 the load balancer is in a state no release should
start from (an interrupted swap, missing tags), 2 bad usage, 4 AWS error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from pipeline import EXIT_AWS_ERROR, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from pipeline.swap_lambda import COLORS, AlbState, SwapError, read_state

# An ECR tag: up to 128 chars of letters, digits, _ . -, not starting with . or -
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
KEYS = (
    "LiveColor",
    "TestColor",
    "LiveImageTag",
    "TestImageTag",
    "BlueImageTag",
    "GreenImageTag",
    "LiveTargetGroupArn",
    "TestTargetGroupArn",
    "FirstDeployment",
)


class DiscoveryError(Exception):
    """The load balancer is in a state a release must not start from."""


def first_deployment(image_tag: str, state: AlbState | None) -> dict[str, str]:
    blue = state.by_color("blue") if state else None
    green = state.by_color("green") if state else None
    return {
        "LiveColor": "blue",
        "TestColor": "green",
        "LiveImageTag": image_tag,
        "TestImageTag": image_tag,
        "BlueImageTag": image_tag,
        "GreenImageTag": image_tag,
        "LiveTargetGroupArn": blue.arn if blue else "",
        "TestTargetGroupArn": green.arn if green else "",
        "FirstDeployment": "true",
    }


def discover(elbv2, load_balancer: str, image_tag: str) -> tuple[dict[str, str], list[str]]:
    """(the deployment parameters, notes for the log)."""
    notes: list[str] = []
    try:
        state = read_state(elbv2, load_balancer)
    except SwapError as exc:
        raise DiscoveryError(str(exc)) from exc
    if state is None:
        notes.append(f"load balancer {load_balancer!r} does not exist yet: first deployment")
        return first_deployment(image_tag, None), notes

    if state.half_done:
        raise DiscoveryError(
            f"production and test both forward to {state.production_tg.describe()}: a swap "
            f"was interrupted. Decide which color is live, then run `python -m "
            f"pipeline.swap_lambda --load-balancer {load_balancer} --to-color COLOR` and "
            f"retry this stage"
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
        return first_deployment(image_tag, state), notes

    params = {
        "LiveColor": live.color,
        "TestColor": test.color,
        "LiveImageTag": live.image,
        "TestImageTag": image_tag,
        f"{live.color.capitalize()}ImageTag": live.image,
        f"{test.color.capitalize()}ImageTag": image_tag,
        "LiveTargetGroupArn": live.arn,
        "TestTargetGroupArn": test.arn,
        "FirstDeployment": "false",
    }
    if live.image == image_tag:
        notes.append(f"note: image {image_tag} is already live on {live.color} (a redeploy)")
    return {key: params[key] for key in KEYS}, notes


def read_image_json(path: str) -> str:
    data = json.loads(Path(path).read_text())
    tag = data.get("tag") if isinstance(data, dict) else None
    if not isinstance(tag, str) or not tag:
        raise ValueError(f"{path} has no 'tag'")
    return tag


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
    parser.add_argument("--out", required=True, help="where to write the JSON")
    parser.add_argument("--region", help="AWS region (default: from the environment)")
    args = parser.parse_args(argv)

    try:
        tag = args.image_tag if args.image_tag is not None else read_image_json(args.image_json)
    except (OSError, ValueError) as exc:
        print(f"ERROR: cannot read the image tag: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not TAG_RE.match(tag):
        print(f"ERROR: {tag!r} is not a valid image tag", file=sys.stderr)
        return EXIT_USAGE

    try:
        params, notes = discover(
            boto3.client("elbv2", region_name=args.region), args.load_balancer, tag
        )
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
