"""Start the drain when the load balancer starts draining this task, not at SIGTERM.

ECS stops a web task in this order: it deregisters the task's target, the
load balancer keeps the task's WebSockets open for the deregistration delay
and then closes those still open (all at once, 1006), and only then does ECS
send SIGTERM. A drain that starts at SIGTERM finds nothing left to spread.
So the web process watches its own target (DescribeTargetHealth every few
seconds); once it has seen the target registered and then sees it draining
or gone, it closes its sockets with 1012 spread over CHAT_DRAIN_SECONDS,
well inside the deregistration delay. SIGTERM later finishes the job.

It also watches its target group's `live` tag. After a swap the old colour
keeps running (it is the test colour now, and the instant rollback), and its
sockets that came in through the production listener stay with it until they
close; the next release would then cut them all at once. So when the tag turns
from "true" to "false", the process moves those sockets (not the test
listener's) off gradually: 1012 spread over CHAT_DEMOTED_DRAIN_SECONDS.

Enabled by CHAT_TARGET_GROUP_ARN (set per colour by web-service.yaml). The
target is this task's IP (from the ECS task metadata endpoint) and port, or
CHAT_TARGET_ADDRESS (`ip:port`) where there is no metadata endpoint.
"""

import asyncio
import json
import logging
import os
import urllib.request
from collections.abc import Awaitable, Callable

from botocore.exceptions import BotoCoreError, ClientError

logger = logging.getLogger(__name__)

REGISTERED = frozenset({"initial", "healthy", "unhealthy", "unavailable"})
LEAVING_REASONS = frozenset({"Target.DeregistrationInProgress", "Target.NotRegistered"})


def task_address(port: int) -> str | None:
    """This task's `ip:port` from the ECS container metadata endpoint (v4), if there is one."""
    base = os.environ.get("ECS_CONTAINER_METADATA_URI_V4")
    if not base:
        return None
    with urllib.request.urlopen(base, timeout=2) as response:  # noqa: S310 - link-local ECS endpoint
        networks = json.load(response).get("Networks", [])
    addresses = [ip for network in networks for ip in network.get("IPv4Addresses", [])]
    return f"{addresses[0]}:{port}" if addresses else None


def is_registered(health: dict) -> bool:
    return health.get("State") in REGISTERED and health.get("Reason") not in LEAVING_REASONS


def is_leaving(health: dict, *, seen_registered: bool) -> bool:
    state, reason = health.get("State"), health.get("Reason")
    if state == "draining":
        return True
    # Before the first registration the target is "not registered" too: only
    # a target that was in the group can leave it.
    return seen_registered and reason in LEAVING_REASONS


class DrainWatch:
    def __init__(
        self,
        *,
        client,
        target_group_arn: str,
        address: str,
        on_leaving: Callable[[], Awaitable[None]],
        on_demoted: Callable[[], Awaitable[None]] | None = None,
        interval: float = 5.0,
        tag_every: int = 6,
    ):
        ip, port = address.rsplit(":", 1)
        self.client = client
        self.target_group_arn = target_group_arn
        self.target = {"Id": ip, "Port": int(port)}
        self.on_leaving = on_leaving
        self.on_demoted = on_demoted
        self.interval = interval
        self.tag_every = tag_every  # the live tag changes once per release: look less often
        self.was_live = False
        self.demoted_drain: asyncio.Task | None = None

    async def run(self) -> None:
        seen_registered = False
        polls = 0
        while True:
            if self.on_demoted is not None and polls % self.tag_every == 0:
                await self._check_demoted()
            polls += 1
            health = await asyncio.to_thread(self._health)
            if health is not None:
                if is_leaving(health, seen_registered=seen_registered):
                    logger.info(
                        "load balancer is draining this task; draining sockets",
                        extra={"target": self.target["Id"], "health": health},
                    )
                    await self.on_leaving()
                    return
                seen_registered = seen_registered or is_registered(health)
            await asyncio.sleep(self.interval)

    async def _check_demoted(self) -> None:
        live = await asyncio.to_thread(self._live_tag)
        if live == "true":
            self.was_live = True
        elif live == "false" and self.was_live:
            self.was_live = False
            logger.info("this colour is no longer live; moving production sockets off")
            # Its own task (kept: the loop holds tasks only weakly); the watch goes
            # on, since the target may leave meanwhile.
            self.demoted_drain = asyncio.get_running_loop().create_task(
                self.on_demoted(), name="demoted-drain"
            )

    def _live_tag(self) -> str | None:
        try:
            response = self.client.describe_tags(ResourceArns=[self.target_group_arn])
        except (BotoCoreError, ClientError) as exc:
            logger.warning("target group tags unknown", extra={"error": str(exc)})
            return None
        for description in response.get("TagDescriptions", []):
            for tag in description.get("Tags", []):
                if tag.get("Key") == "live":
                    return tag.get("Value")
        return None

    def _health(self) -> dict | None:
        try:
            response = self.client.describe_target_health(
                TargetGroupArn=self.target_group_arn, Targets=[self.target]
            )
        except (BotoCoreError, ClientError) as exc:
            logger.warning("target health unknown", extra={"error": str(exc)})
            return None
        descriptions = response.get("TargetHealthDescriptions", [])
        return descriptions[0].get("TargetHealth", {}) if descriptions else None
