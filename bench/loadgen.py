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
        self.positions: dict[str, tuple[int, str]] = {}  # room -> (seq, epoch) for resume
        self.opening = True

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
            if self.opening:  # a refused auth or join: do not wait for `joined`
                self.control.put_nowait(f"error {frame['code']}: {frame.get('message')}")
        elif kind in ("ready", "joined"):
            if kind == "joined":
                self.positions[frame["connection_id"]] = (frame["seq"], frame["epoch"])
            self.control.put_nowait(kind)

    def on_ws_disconnected(self, transport):
        if self.opening:  # closed by the server before `ready`/`joined` (auth timeout, limits)
            self.control.put_nowait("closed")

    @classmethod
    async def open(cls, url, token, rooms, tally, positions=None):
        """Connect, authenticate and join `rooms` (resuming from `positions`, if given)."""
        started = time.monotonic()
        transport, client = await ws_connect(lambda: cls(tally), url)
        client.transport = transport
        connected = time.monotonic()
        client.send_frame({"type": "auth", "token": token})
        assert (answer := await client.control.get()) == "ready", answer
        ready = time.monotonic()
        for room in rooms:
            join = {"type": "join", "connection_id": room}
            if positions and room in positions:
                join["since"], join["epoch"] = positions[room]
            client.send_frame(join)
            assert (answer := await client.control.get()) == "joined", answer
        client.opening = False
        # Milliseconds: WebSocket handshake, auth (to `ready`), joins (to the last `joined`).
        client.timings = [
            (connected - started) * 1e3,
            (ready - connected) * 1e3,
            (time.monotonic() - ready) * 1e3,
        ]
        return client

    def close(self):
        self.transport.send_close()
        self.transport.disconnect()

    def send_frame(self, frame):
        self.transport.send(WSMsgType.TEXT, json.dumps(frame).encode())

    async def send(self, room, seq):
        body = f"{seq}:{time.time_ns()}"
        self.send_frame(
            {"type": "send", "connection_id": room, "client_id": f"c{seq}", "body": body}
        )


async def open_many(url, specs, tally, concurrency=CONNECT_CONCURRENCY, positions=None):
    gate = asyncio.Semaphore(concurrency)

    async def one(index, token, rooms):
        async with gate:
            resume = positions[index] if positions else None
            return await Client.open(url, token, rooms, tally, resume)

    return await asyncio.gather(*(one(i, token, rooms) for i, (token, rooms) in enumerate(specs)))


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
        await wait_for_acks(sender, count)
        # Past capacity the server refuses sends (`overloaded`): never accepted, so
        # never delivered; every accepted one must arrive.
        refused = sender.errors.count("overloaded")
        expected = (count - refused) * len(listeners)
        await wait_for(tally, expected, timeout=10)
        elapsed = max(tally.last_receive - start, 1e-9)
        emit(
            scenario="lecture-step",
            rate=rate,
            sent=count,
            refused=refused,
            expected=expected,
            delivered=tally.received,
            lost=expected - tally.received,
            rejected=len(sender.errors) - refused,
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
    await asyncio.sleep(1)  # refusals come back at once; acks wait for SQS
    refused = sum(c.errors.count("overloaded") for c in clients)  # never accepted
    expected = (sent - refused) * 2
    await wait_for(tally, expected, timeout=10)
    elapsed = max(tally.last_receive - start, 1e-9)
    errors = sum(len(c.errors) for c in clients) - refused
    codes = sorted({code for c in clients for code in c.errors})
    emit(
        scenario="tutoring",
        rooms=len(cfg["rooms"]),
        clients=len(clients),
        sent=sent,
        refused=refused,
        expected=expected,
        delivered=tally.received,
        lost=expected - tally.received,
        rejected=errors,
        error_codes=codes,
        deliveries_per_s=round(tally.received / elapsed),
        p50_ms=percentile(tally.latencies, 0.5),
        p99_ms=percentile(tally.latencies, 0.99),
        max_ms=percentile(tally.latencies, 1.0),
    )


async def reconnect(cfg):
    """A drain's reconnect storm: every client connects (auth + join) at once, then
    reconnects resuming with `since`, while pairs in other rooms keep chatting."""
    live_tally, storm_tally = Tally(), Tally()
    live_specs = [(token, [room]) for room in cfg["live_rooms"] for token in cfg["pair_tokens"]]
    live = await open_many(cfg["url"], live_specs, live_tally)
    talking = asyncio.Event()

    async def talk(index, client):
        room = live_specs[index][1][0]
        n = 0
        await asyncio.sleep(index / len(live))  # spread the phases over one second
        while not talking.is_set():
            await client.send(room, index * 1_000_000 + n)
            n += 1
            await asyncio.sleep(1)

    talkers = [asyncio.create_task(talk(i, c)) for i, c in enumerate(live)]
    await asyncio.sleep(2)  # warm-up: live traffic flowing, not measured
    specs = [(token, [room]) for room in cfg["rooms"] for token in cfg["tokens"]]
    positions = None
    for phase in ("first", "resume"):
        live_tally.reset()
        start = time.monotonic()
        try:
            clients = await open_many(cfg["url"], specs, storm_tally, cfg["concurrency"], positions)
            failed = None
        except AssertionError as exc:
            clients, failed = [], str(exc)[:200]
        elapsed = time.monotonic() - start
        emit(
            scenario="reconnect",
            phase=phase,
            connections=len(specs),
            rooms=len(cfg["rooms"]),
            concurrency=cfg["concurrency"],
            failed=failed,
            seconds=round(elapsed, 2),
            connections_per_s=round(len(specs) / elapsed) if not failed else None,
            live_deliveries=live_tally.received,
            live_p50_ms=percentile(live_tally.latencies, 0.5),
            live_p99_ms=percentile(live_tally.latencies, 0.99),
            live_max_ms=percentile(live_tally.latencies, 1.0),
            **{
                f"{stage}_p50_p99_ms": [
                    percentile([c.timings[n] for c in clients], q) for q in (0.5, 0.99)
                ]
                for n, stage in enumerate(("handshake", "auth", "join"))
            },
        )
        if failed:
            break
        positions = [client.positions for client in clients]
        for client in clients:
            client.close()
        await asyncio.sleep(2)  # the server sees every socket go (presence, feeds)
    talking.set()
    await asyncio.gather(*talkers)


async def idle(cfg):
    tally = Tally()
    specs = [(cfg["token"], [room]) for room in cfg["rooms"] for _ in range(cfg["per_room"])]
    clients = await open_many(cfg["url"], specs, tally)
    emit(scenario="idle-ready", connections=len(clients))
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # hold until told


SCENARIOS = {"lecture": lecture, "tutoring": tutoring, "idle": idle, "reconnect": reconnect}

if __name__ == "__main__":
    config = json.loads(open(sys.argv[1]).read())
    asyncio.run(SCENARIOS[config["scenario"]](config))
