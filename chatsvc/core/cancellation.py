"""A cancellation that Python 3.11 can lose, and how loops still honour it.

In 3.11, `asyncio.wait_for` returns the awaited result instead of raising
CancelledError when the task is cancelled in the same loop turn as the
operation completes (python/cpython#86296, fixed in 3.12). redis-py wraps
every socket write in `wait_for` once a socket timeout is set, so any Redis
command can swallow a cancellation. The task stays marked as cancelling,
so a loop that runs until it is cancelled checks the mark on every turn;
otherwise it would wait forever for its next event (and a server or test
stopping its event loop would hang on it).
"""

import asyncio


def raise_if_cancelled() -> None:
    """Raise CancelledError if this task was cancelled and something swallowed it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
