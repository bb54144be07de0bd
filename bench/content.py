"""Content-event benchmark: what edits, reactions, read positions and history
overlays cost in the room stream on real Redis (no server, no network but loopback).

    python bench/content.py [--redis redis://127.0.0.1:6379/9] [--users 500]

Prints one JSON line per operation: operations/s and mean/p99 latency in ms,
measured from one asyncio client with `--concurrency` operations in flight.
`reactions` is the lecture case: every user toggles the same emoji on one
message at once (react.lua applies each atomically: no retries). Not a test:
run by hand or by `make bench`.
"""

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from chatsvc.core.ulid import new_ulid
from chatsvc.streams import Change, Reaction, Window
from chatsvc.streams.redis_stream import RedisRoomStream

WINDOW = Window(keep_messages=1000, keep_seconds=600, max_messages=10000, sent_ttl_seconds=600)


async def timed(name: str, calls, concurrency: int) -> dict:
    latencies: list[float] = []
    queue = list(calls)
    started = time.perf_counter()

    async def lane():
        while queue:
            call = queue.pop()
            begin = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - begin) * 1000)

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "operation": name,
        "count": len(latencies),
        "per_second": round(len(latencies) / elapsed),
        "mean_ms": round(statistics.fmean(latencies), 3),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 3),
    }


async def main(url: str, users: int, concurrency: int) -> None:
    stream = RedisRoomStream(url=url, window=WINDOW)
    room = new_ulid()
    head = '{"type":"message","connection_id":"' + room + '",'
    ids = []
    for n in range(1000):
        sender = f'"sender":{{"id":"u{n % users}","name":"U"}}'
        tail = f',{sender},"body":"m{n}","ts":"2026-01-01T00:00:00.000Z"}}'
        appended = await stream.append(
            connection_id=room, sent_key=new_ulid(), message_id=new_ulid(), head=head, tail=tail
        )
        ids.append(json.loads(appended.frame)["id"])
    seed = {"sender": "u0", "ts": "2026-01-01T00:00:00.000Z"}
    results = []

    def reaction(user: int, message_id: str):
        return lambda: stream.react(
            Reaction(
                connection_id=room,
                message_id=message_id,
                sent_key=new_ulid(),
                event_id=new_ulid(),
                head='{"type":"reaction","connection_id":"' + room + '",',
                tail=',"message_id":"' + message_id + '"',
                seed=seed,
                emoji="👍",
                user_id=f"u{user}",
                max_kinds=20,
                max_reactions=1000,
                shown=25,
            )
        )

    results.append(
        await timed("reactions", [reaction(u, ids[-1]) for u in range(users)], concurrency)
    )

    async def edit(message_id: str):
        record = await stream.record(room, message_id)
        await stream.apply(
            Change(
                connection_id=room,
                message_id=message_id,
                sent_key=new_ulid(),
                event_id=new_ulid(),
                head='{"type":"message_edited","connection_id":"' + room + '",',
                tail=',"message_id":"' + message_id + '","body":"edited"}',
                version=record["ver"] if record else "0",
                seed=None if record else seed,
                fields={"body": "edited"},
                seq_fields=("body_rev",),
            )
        )

    results.append(
        await timed("edits (read record + apply)", [lambda m=m: edit(m) for m in ids[:500]], 1)
    )
    tenant = new_ulid()
    results.append(
        await timed(
            "read positions",
            [
                lambda u=u: stream.mark_read(room, tenant_id=tenant, user_id=f"r{u}", seq=10**18)
                for u in range(users)
            ],
            concurrency,
        )
    )
    results.append(
        await timed(
            "history overlay (100 records)",
            [lambda: stream.records(room, ids[-100:]) for _ in range(200)],
            1,
        )
    )
    results.append(
        await timed(
            "messages (append.lua, for comparison)",
            [
                lambda: stream.append(
                    connection_id=room,
                    sent_key=new_ulid(),
                    message_id=new_ulid(),
                    head=head,
                    tail=',"sender":{"id":"u","name":"U"},"body":"x","ts":"2026-01-01T00:00:00.000Z"}',
                )
                for _ in range(2000)
            ],
            concurrency,
        )
    )
    await stream.close()
    for result in results:
        print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.redis, args.users, args.concurrency))
