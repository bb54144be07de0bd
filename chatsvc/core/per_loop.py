"""One instance per running event loop.

Producers, stores and hubs hold asyncio objects bound to the loop that made
them. A server has one loop; tests have one per test.
"""

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    def __init__(self, factory: Callable[[], T]):
        self.factory = factory
        self._instances: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, *, stale: Callable[[T], bool] = lambda _: False) -> T:
        """This loop's instance; a new one if there is none or it is `stale`."""
        loop = asyncio.get_running_loop()
        current = self._instances.get(loop)
        if current is None or stale(current):
            current = self._instances[loop] = self.factory()
        return current

    def pop(self) -> T | None:
        return self._instances.pop(asyncio.get_running_loop(), None)
