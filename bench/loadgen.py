"""Load generator for bench/fanout.py: real WebSocket clients in their own process.

Reads a JSON config on argv[1], runs one scenario, prints JSON lines on stdout.
Message bodies carry "<seq>:<send time ns>" so receivers measure latency.
"""

import asyncio
import json
import sys
import time

from picows import WSListener, WSMsgType, ws_connect

CONNECT_CONCURRENCY = 50


def percentile(values, fraction):
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * fraction))], 2)


class Tally:
    """What receivers saw: message count per seq and latencies in ms."""

    def __init__(self):
        self.received = 0
        self.latencies = []
        self.last_receive = 0.0

    def reset(self):
        self.__init__()


class Client(WSListener):
    """One WebSocket connection (picows: a C-speed client, so the load generator
    measures the server rather than its own frame parsing)."""

    def __init__(self, tally):
        super().__init__()
        self.tally = tally
        self.acks = 0
        self.errors = []
        self.control: asyncio.Queue = asyncio.Queue()
        self.transport = None

    def on_ws_frame(self, transport, frame):
        if frame.msg_type != WSMsgType.TEXT:
            return
        received_ns = time.time_ns()
        frame = json.loads(frame.get_payload_as_utf8_text())
        kind = frame["type"]
        if kind == "message":
            tally = self.tally
            tally.received += 1
            tally.latencies.append((received_ns - int(frame["body"].split(":", 1)[1])) / 1e6)
            tally.last_receive = time.monotonic()
        elif kind == "ack":
            self.acks += 1
        elif kind == "error":
            self.errors.append(frame["code"])
        elif kind in ("ready", "joined"):
            self.control.put_nowait(kind)

    @classmethod
    async def open(cls, url, token, rooms, tally):
        transport, client = await ws_connect(lambda: cls(tally), url)
        client.transport = transport
        client.send_frame({"type": "auth", "token": token})
        assert await client.control.get() == "ready"
        for room in rooms:
            client.send_frame({"type": "join", "connection_id": room})
            assert await client.control.get() == "joined"
        return client

    def send_frame(self, frame):
        self.transport.send(WSMsgType.TEXT, json.dumps(frame).encode())

    async def send(self, room, seq):
        body = f"{seq}:{time.time_ns()}"
        self.send_frame(
            {"type": "send", "connection_id": room, "client_id": f"c{seq}", "body": body}
        )


async def open_many(url, specs, tally):
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(token, rooms):
        async with gate:
            return await Client.open(url, token, rooms, tally)

    return await asyncio.gather(*(one(token, rooms) for token, rooms in specs))


async def wait_for(tally, expected, timeout):
    deadline = time.monotonic() + timeout
    while tally.received < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


def emit(**fields):
    print(json.dumps(fields), flush=True)


async def lecture(cfg):
    room = cfg["rooms"][0]
    tally = Tally()
    listeners = await open_many(cfg["url"], [(cfg["token"], [room])] * cfg["clients"], tally)
    sender_tally = Tally()
    [sender] = await open_many(cfg["url"], [(cfg["sender_token"], [room])], sender_tally)
    # Warm-up (first boto3 call, Redis connections): not measured.
    for seq in range(10):
        await sender.send(room, seq)
        await asyncio.sleep(0.05)
    await wait_for(tally, 10 * len(listeners), timeout=10)
    seq = 10
    for rate in cfg["rates"]:
        tally.reset()
        sender.acks, sender.errors = 0, []
        count = int(rate * cfg["seconds"])
        start = time.monotonic()
        for n in range(count):
            await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
            await sender.send(room, seq)
            seq += 1
        expected = count * len(listeners)
        await wait_for(tally, expected, timeout=10)
        elapsed = max(tally.last_receive - start, 1e-9)
        await wait_for_acks(sender, count)
        emit(
            scenario="lecture-step",
            rate=rate,
            sent=count,
            expected=expected,
            delivered=tally.received,
            lost=expected - tally.received,
            rejected=len(sender.errors),
            error_codes=sorted(set(sender.errors)),
            acked=sender.acks,
            deliveries_per_s=round(tally.received / elapsed),
            p50_ms=percentile(tally.latencies, 0.5),
            p99_ms=percentile(tally.latencies, 0.99),
        )


async def wait_for_acks(client, count, timeout=10):
    deadline = time.monotonic() + timeout
    while client.acks + len(client.errors) < count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)


async def tutoring(cfg):
    tally = Tally()
    specs = [(token, [room]) for room in cfg["rooms"] for token in cfg["pair_tokens"]]
    clients = await open_many(cfg["url"], specs, tally)
    # Warm-up (first sends, connection pools): one message each, not measured.
    for index, client in enumerate(clients):
        await client.send(specs[index][1][0], 10_000_000 + index)
        await asyncio.sleep(2 / len(clients))
    await wait_for(tally, 2 * len(clients), timeout=20)
    tally.reset()
    seconds = cfg["seconds"]
    start = time.monotonic()

    async def talk(index, client):
        room = specs[index][1][0]
        await asyncio.sleep(index / len(clients))  # spread the phases over one second
        for n in range(seconds):
            await asyncio.sleep(max(0.0, start + n + index / len(clients) - time.monotonic()))
            await client.send(room, index * 100_000 + n)

    await asyncio.gather(*(talk(i, c) for i, c in enumerate(clients)))
    sent = len(clients) * seconds
    expected = sent * 2
    await wait_for(tally, expected, timeout=10)
    elapsed = max(tally.last_receive - start, 1e-9)
    errors = sum(len(c.errors) for c in clients)
    codes = sorted({code for c in clients for code in c.errors})
    emit(
        scenario="tutoring",
        rooms=len(cfg["rooms"]),
        clients=len(clients),
        sent=sent,
        expected=expected,
        delivered=tally.received,
        lost=expected - tally.received,
        rejected=errors,
        error_codes=codes,
        deliveries_per_s=round(tally.received / elapsed),
        p50_ms=percentile(tally.latencies, 0.5),
        p99_ms=percentile(tally.latencies, 0.99),
    )


async def idle(cfg):
    tally = Tally()
    specs = [(cfg["token"], [room]) for room in cfg["rooms"] for _ in range(cfg["per_room"])]
    clients = await open_many(cfg["url"], specs, tally)
    emit(scenario="idle-ready", connections=len(clients))
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # hold until told


SCENARIOS = {"lecture": lecture, "tutoring": tutoring, "idle": idle}

if __name__ == "__main__":
    config = json.loads(open(sys.argv[1]).read())
    asyncio.run(SCENARIOS[config["scenario"]](config))
