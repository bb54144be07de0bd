"""Per-connection flood control: two token buckets plus a strike counter.

Message-producing frames (`send`, `typing`) spend the tenant's
`messages_per_second`; control frames (`join`, `leave`, `ping`, `history`,
anything else) spend a separate, more generous bucket
(CHAT_CONTROL_FRAMES_PER_SECOND, CHAT_CONTROL_BURST). Every rejection from
either is a strike; too many strikes close the socket (4429).
"""

import time
from collections import deque

from django.conf import settings


class TokenBucket:
    __slots__ = ("burst", "clock", "rate", "tokens", "updated")  # two per socket

    def __init__(self, *, rate: float, burst: float, clock=time.monotonic):
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.clock = clock
        self.updated = clock()

    def take(self, cost: float = 1) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class Strikes:
    """Counts rejections in a sliding window; too many means a flood."""

    __slots__ = ("clock", "limit", "times", "window")

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


def send_rate(tenant) -> tuple[float, float]:
    """(rate, burst) of a socket's message bucket: the tenant's messages_per_second."""
    rate = tenant.messages_per_second
    return rate, max(5, 2 * rate)


def control_rate() -> tuple[float, float]:
    """(rate, burst) of a socket's control-frame bucket."""
    return settings.CHAT_CONTROL_FRAMES_PER_SECOND, max(1, settings.CHAT_CONTROL_BURST)
