"""Per-connection flood control: a token bucket plus a strike counter."""

import time
from collections import deque


class TokenBucket:
    def __init__(self, *, rate: float, burst: float, clock=time.monotonic):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.clock = clock
        self.updated = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


class Strikes:
    """Counts rejections in a sliding window; too many means a flood."""

    def __init__(self, *, limit: int, window_seconds: float, clock=time.monotonic):
        self.limit = limit
        self.window = window_seconds
        self.clock = clock
        self.times: deque[float] = deque()

    def add(self) -> bool:
        """Record a strike; True when the limit is reached."""
        now = self.clock()
        self.times.append(now)
        while self.times and self.times[0] < now - self.window:
            self.times.popleft()
        return len(self.times) >= self.limit
