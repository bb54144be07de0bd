"""Back-pressure past capacity: while this process is behind, new messages are refused.

A web process fans out on one event loop. Offered more room traffic than it
can deliver, it falls behind and the wait of every frame grows without bound
(docs/performance.md). Two lags show it, sampled every SAMPLE_SECONDS:

* the loop's: how late a timer fires (each turn of the loop takes longer when
  a backlog of room messages waits to be fanned out);
* the intake's: how long incoming frames wait for their socket's consumer
  (chatsvc.core.websocket_protocol reports it). A socket's frames are handled
  one at a time, a loop turn or two each, so a sender faster than that queues
  while every loop turn stays short: measured in the lecture past capacity,
  the sender's frames waited seconds with the loop's lag under 100 ms.

While the median of the last SAMPLES (each the larger of the two) is above
CHAT_OVERLOAD_LAG_MS, frames that would add room traffic are refused with
`error overloaded` and a `retry_after_ms` (REFUSED_TYPES; `typing` is dropped
without an answer). Refusing stops once the median falls below half the
threshold, so it does not flap from one sample to the next. The median ignores
a single stall (a garbage collection, one slow callback): only lag that lasts
refuses anything.

A refused frame was never accepted (no seq, no ack): nothing accepted is lost,
and the client resends the same `client_id` later.
"""

import asyncio
import logging
import random
import time
from collections import deque

from django.conf import settings

from chatsvc.core.per_loop import PerLoop
from chatsvc.realtime.protocol import FrameError

logger = logging.getLogger(__name__)

SAMPLE_SECONDS = 0.05
SAMPLES = 3  # the median of these: one stall alone never trips the monitor, two do
MAX_RETRY_AFTER_MS = 5000
# Past capacity the monitor trips and recovers every second or so; the log tells
# one overload from its first refusal to this long after its last.
QUIET_SECONDS = 10
# Frames that put a new event in a room (a delivery to every member) are refused;
# `typing` is best-effort and unanswered, so it is dropped. `moderate` (a moderator
# may be stopping the flood that overloads the room) and `upload` (no room
# traffic) pass.
REFUSED_TYPES = frozenset({"send", "edit", "delete", "react"})
SHED_TYPES = REFUSED_TYPES | {"typing"}


class LagMonitor:
    """The lag of one event loop, and whether it is overloaded (see the module)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, threshold_ms: int):
        self.loop = loop
        self.threshold_ms = threshold_ms
        self.samples = deque([0.0] * SAMPLES, maxlen=SAMPLES)  # a first stall is one of three
        self.overloaded = False
        self.refused = 0  # frames refused in the current overload (as logged)
        self._began: float | None = None  # when it began (time.monotonic); None: none
        self._calm_since = 0.0  # when refusing last stopped
        self._worst_ms = 0
        self._intake = 0.0  # the longest intake wait reported since the last sample
        self._due = 0.0
        self._timer: asyncio.TimerHandle | None = None
        if threshold_ms > 0:
            self._schedule()

    @property
    def lag_ms(self) -> int:
        """The median of the recent samples."""
        return round(1000 * sorted(self.samples)[SAMPLES // 2])

    def note_intake(self, waited_seconds: float) -> None:
        """A frame has waited this long for its socket's consumer (so far)."""
        if waited_seconds > self._intake:
            self._intake = waited_seconds

    def observe(self, lag_seconds: float) -> None:
        """One sample: how late the timer fired, or the intake's wait if longer."""
        self.samples.append(lag_seconds)
        lag_ms, now = self.lag_ms, time.monotonic()
        if self.overloaded:
            self._worst_ms = max(self._worst_ms, lag_ms)
            if lag_ms < self.threshold_ms / 2:
                self.overloaded, self._calm_since = False, now
        elif lag_ms > self.threshold_ms:
            self.overloaded = True
            if self._began is None:
                self._began, self.refused, self._worst_ms = now, 0, lag_ms
                logger.warning(
                    "overloaded: refusing new messages",
                    extra={"lag_ms": lag_ms, "threshold_ms": self.threshold_ms},
                )
        elif self._began is not None and now - self._calm_since >= QUIET_SECONDS:
            logger.warning(
                "overload over",
                extra={
                    "refused": self.refused,
                    "seconds": round(self._calm_since - self._began, 1),
                    "worst_lag_ms": self._worst_ms,
                },
            )
            self._began = None

    def refusal(self, ref: str | None) -> FrameError:
        """The `overloaded` error for one refused frame, with a jittered retry hint:
        clients refused together should not all come back together."""
        self.refused += 1
        wait_ms = min(MAX_RETRY_AFTER_MS, max(self.lag_ms, self.threshold_ms))
        return FrameError(
            "overloaded",
            "the server is behind delivering messages; resend later",
            ref,
            retry_after_ms=round(wait_ms * random.uniform(1, 2)),  # noqa: S311
        )

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        self._due = self.loop.time() + SAMPLE_SECONDS
        self._timer = self.loop.call_at(self._due, self._sample)

    def _sample(self) -> None:
        late = self.loop.time() - self._due
        self.observe(max(0.0, late, self._intake))
        self._intake = 0.0
        self._schedule()


_monitors = PerLoop(
    lambda: LagMonitor(asyncio.get_running_loop(), threshold_ms=settings.CHAT_OVERLOAD_LAG_MS)
)


def monitor() -> LagMonitor:
    """This event loop's monitor (started by its first use)."""
    return _monitors.get()
