"""The target watch: when a target counts as leaving the load balancer."""

import asyncio

from chatsvc.core.drain_watch import DrainWatch

REGISTERED = {"State": "healthy"}
DRAINING = {"State": "draining", "Reason": "Target.DeregistrationInProgress"}
NOT_REGISTERED = {"State": "unused", "Reason": "Target.NotRegistered"}


class Script:
    """describe_target_health answering a fixed sequence of healths (the last one repeats)."""

    def __init__(self, *healths):
        self.healths = list(healths)

    def describe_target_health(self, *, TargetGroupArn, Targets):
        health = self.healths.pop(0) if len(self.healths) > 1 else self.healths[0]
        return {"TargetHealthDescriptions": [{"Target": Targets[0], "TargetHealth": health}]}


async def leaves(*healths) -> bool:
    """Whether the watch calls on_leaving while the load balancer answers `healths`."""
    left = asyncio.Event()

    async def on_leaving():
        left.set()

    watcher = DrainWatch(
        client=Script(*healths),
        target_group_arn="arn",
        address="10.0.0.1:8000",
        on_leaving=on_leaving,
        interval=0.01,
    )
    try:
        await asyncio.wait_for(watcher.run(), 0.5)
    except TimeoutError:
        pass
    return left.is_set()


async def test_draining_after_registration_starts_the_drain():
    assert await leaves(REGISTERED, REGISTERED, DRAINING)
    assert await leaves(REGISTERED, NOT_REGISTERED)


async def test_a_target_not_registered_yet_is_not_leaving():
    # ECS registers a new task's target after it starts: no drain before that.
    assert not await leaves(NOT_REGISTERED)
    assert not await leaves(NOT_REGISTERED, NOT_REGISTERED, REGISTERED)
