"""Coalescer: lookups that wait at the same time share one fetch."""

import asyncio

import pytest

from chatsvc.core.coalesce import Coalescer


class Source:
    """A fetch that records its batches and answers when told to."""

    def __init__(self, fail=None):
        self.batches = []
        self.release = asyncio.Event()
        self.fail = fail

    async def fetch(self, keys):
        self.batches.append(sorted(keys))
        await self.release.wait()
        if self.fail:
            raise self.fail
        return {key: key.upper() for key in keys}


async def test_lookups_of_one_turn_share_a_fetch_and_later_ones_the_next():
    source = Source()
    coalescer = Coalescer(source.fetch)
    first = [asyncio.ensure_future(coalescer.get(k)) for k in ("a", "b", "a")]
    await asyncio.sleep(0.01)
    later = [asyncio.ensure_future(coalescer.get(k)) for k in ("c", "d")]  # during the fetch
    await asyncio.sleep(0.01)
    assert source.batches == [["a", "b"]]
    source.release.set()
    assert await asyncio.gather(*first, *later) == ["A", "B", "A", "C", "D"]
    assert source.batches == [["a", "b"], ["c", "d"]]
    assert coalescer.runner is None


async def test_a_caller_that_gives_up_does_not_cancel_the_others():
    source = Source()
    coalescer = Coalescer(source.fetch)
    quitter, stayer = (asyncio.ensure_future(coalescer.get("a")) for _ in range(2))
    await asyncio.sleep(0.01)
    quitter.cancel()
    source.release.set()
    assert await stayer == "A"
    assert quitter.cancelled()


async def test_a_failed_fetch_fails_every_lookup_of_its_batch_and_the_next_one_runs():
    source = Source(fail=RuntimeError("database down"))
    coalescer = Coalescer(source.fetch)
    lookups = [asyncio.ensure_future(coalescer.get(k)) for k in ("a", "b")]
    source.release.set()
    for lookup in lookups:
        with pytest.raises(RuntimeError, match="database down"):
            await lookup
    source.fail = None
    assert await coalescer.get("c") == "C"


async def test_cancelling_the_fetch_cancels_its_lookups_instead_of_hanging_them():
    source = Source()
    coalescer = Coalescer(source.fetch)
    lookup = asyncio.ensure_future(coalescer.get("a"))
    await asyncio.sleep(0.01)
    coalescer.runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await lookup
