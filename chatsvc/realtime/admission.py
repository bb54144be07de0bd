"""Admission: how many sockets of a process authenticate or join rooms at once.

A reconnect storm (a drain sends every client of a process to the others)
brings thousands of `auth` and `join` frames at once. Worked all together,
they share the event loop with the live rooms' messages, which then wait
behind hundreds of them (live p99 0.6 s in bench/fanout.py's reconnect
scenario). Here at most CHAT_ADMISSION_CONCURRENCY run at a time and the
rest wait their turn: a live message waits behind a few at most, and the
storm goes no slower, since the CPU limits it either way (docs/performance.md).

A socket that waits longer than CHAT_ADMISSION_WAIT_SECONDS (a backend so slow
that the queue does not move) gets `overloaded` with a `retry_after_ms`
rather than an answer that comes too late.
"""

import asyncio
import random
from contextlib import asynccontextmanager

from django.conf import settings

from chatsvc.core.per_loop import PerLoop


class Busy(Exception):
    """No turn within CHAT_ADMISSION_WAIT_SECONDS; nothing was done."""

    def __init__(self, retry_after_ms: int):
        super().__init__(f"no admission turn; retry after {retry_after_ms} ms")
        self.retry_after_ms = retry_after_ms


class Gate:
    def __init__(self, limit: int, wait_seconds: float):
        self.limit = limit
        self.wait_seconds = wait_seconds
        self.turns = asyncio.Semaphore(limit) if limit > 0 else None

    @asynccontextmanager
    async def turn(self):
        if self.turns is None:
            yield
            return
        try:
            async with asyncio.timeout(self.wait_seconds):
                await self.turns.acquire()
        except TimeoutError:
            # Jittered, so the refused do not all come back at once.
            raise Busy(round(self.wait_seconds * 1000 * random.uniform(0.5, 1.5))) from None  # noqa: S311
        try:
            yield
        finally:
            self.turns.release()


def _current(gate: Gate) -> bool:
    return (gate.limit, gate.wait_seconds) == (
        settings.CHAT_ADMISSION_CONCURRENCY,
        settings.CHAT_ADMISSION_WAIT_SECONDS,
    )


_gates = PerLoop(
    lambda: Gate(settings.CHAT_ADMISSION_CONCURRENCY, settings.CHAT_ADMISSION_WAIT_SECONDS)
)


def turn():
    """`async with admission.turn():` around an auth or a join; raises Busy."""
    return _gates.get(stale=lambda gate: not _current(gate)).turn()
