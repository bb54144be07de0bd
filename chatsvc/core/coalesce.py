"""Coalescer: the lookups that wait at the same time share one batch.

A reconnect storm asks for hundreds of different rooms a second, and the
database is reached through one thread: one query set per room queued behind
it. Lookups that arrive while a batch is being fetched wait for the next
one, so a batch holds whatever piled up meanwhile; a lone lookup is fetched
at once (one loop turn later).
"""

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]]):
        """`fetch(keys)` returns a value for every key it is given."""
        self.fetch = fetch
        self.waiting: dict[K, asyncio.Future] = {}
        self.runner: asyncio.Task | None = None

    async def get(self, key: K) -> V:
        future = self.waiting.get(key)
        if future is None:
            future = self.waiting[key] = asyncio.get_running_loop().create_future()
        if self.runner is None:
            self.runner = asyncio.create_task(self._run(), name="coalescer")
        # Shielded: one caller giving up must not cancel the others' answer.
        return await asyncio.shield(future)

    async def _run(self) -> None:
        batch: dict[K, asyncio.Future] = {}
        try:
            await asyncio.sleep(0)  # let this loop turn's lookups join the first batch
            while self.waiting:
                batch, self.waiting = self.waiting, {}
                try:
                    found = await self.fetch(list(batch))
                except Exception as exc:
                    for future in batch.values():
                        _fail(future, exc)
                else:
                    for key, future in batch.items():
                        if not future.done():
                            future.set_result(found[key])
        finally:
            self.runner = None
            # Cancelled (the loop is closing): nobody will answer these.
            for future in (*batch.values(), *self.waiting.values()):
                future.cancel()
            self.waiting = {}


def _fail(future: asyncio.Future, error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
        future.exception()  # retrieved: a caller that gave up leaves no warning behind
