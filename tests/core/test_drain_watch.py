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


class Tagged(Script):
    """...and describe_tags answering a sequence of `live` tag values (the last repeats)."""

    def __init__(self, lives, *healths):
        super().__init__(*healths)
        self.lives = list(lives)

    def describe_tags(self, *, ResourceArns):
        live = self.lives.pop(0) if len(self.lives) > 1 else self.lives[0]
        tags = [] if live is None else [{"Key": "live", "Value": live}]
        return {"TagDescriptions": [{"ResourceArn": ResourceArns[0], "Tags": tags}]}


async def demotions(*lives, client=None) -> int:
    """How often the watch calls on_demoted while the live tag reads `lives`."""
    calls = []

    async def on_demoted():
        calls.append(1)

    async def on_leaving():
        pass

    watcher = DrainWatch(
        client=client or Tagged(lives, REGISTERED),
        target_group_arn="arn",
        address="10.0.0.1:8000",
        on_leaving=on_leaving,
        on_demoted=on_demoted,
        interval=0.01,
        tag_every=1,
    )
    try:
        await asyncio.wait_for(watcher.run(), 0.3)
    except TimeoutError:
        pass
    return len(calls)


async def test_a_live_colour_that_stops_being_live_is_demoted_once():
    assert await demotions("true", "true", "false") == 1
    assert await demotions("true", "false", "true", "false") == 2  # swapped back, then again


async def test_a_colour_that_never_was_live_is_not_demoted():
    # The test colour of a first deployment, or a task started after the swap.
    assert await demotions("false") == 0
    assert await demotions(None, "false") == 0


async def test_an_unreadable_tag_changes_nothing():
    class Failing(Tagged):
        def describe_tags(self, **kwargs):
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "Throttling", "Message": "x"}}, "DescribeTags")

    assert await demotions(client=Failing(["true"], REGISTERED)) == 0
