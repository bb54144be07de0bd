"""Slowloris: a client dribbling its request headers is cut, others are served."""

import asyncio
import time
import urllib.request

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


async def dribble(port: int, interval: float, seconds: float) -> float | None:
    """One header line every `interval` s; when the server cut us (s after connecting), or None."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await writer.drain()
        n = 0
        while time.monotonic() - started < seconds:
            try:
                if await asyncio.wait_for(reader.read(1), interval) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                pass
            n += 1
            writer.write(f"X-Slow-{n}: 1\r\n".encode())
            await writer.drain()
    except ConnectionError:
        return time.monotonic() - started
    finally:
        writer.close()
    return None


async def test_slow_headers_are_cut_after_the_deadline(start_server):
    server = start_server(CHAT_HEADER_TIMEOUT_SECONDS="2")
    cut = await asyncio.gather(*(dribble(server.port, 0.5, 8) for _ in range(50)))
    assert all(moment is not None and 1.5 < moment < 4 for moment in cut), cut
    assert await asyncio.to_thread(status_of, server.url + "/healthz") == 200


def status_of(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310
        return response.status
