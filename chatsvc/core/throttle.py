"""Fixed-window request counting in Django's cache (Redis when REDIS_URL is set,
so every process shares the counts; the process's memory otherwise)."""

import time

from django.core.cache import cache


def over_limit(key: str, *, limit: int, window_seconds: int) -> int | None:
    """Count one hit; the seconds until the window ends when `limit` is exceeded, else None."""
    now = time.time()
    window = int(now // window_seconds)
    bucket = f"throttle:{key}:{window}"
    cache.add(bucket, 0, timeout=window_seconds + 1)
    try:
        count = cache.incr(bucket)
    except ValueError:  # expired between add and incr
        cache.add(bucket, 1, timeout=window_seconds + 1)
        count = 1
    if count <= limit:
        return None
    return max(1, int((window + 1) * window_seconds - now))


def count(key: str, *, window_seconds: int) -> int:
    return cache.get(f"throttle:{key}:{int(time.time() // window_seconds)}", 0)
