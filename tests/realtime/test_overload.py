"""Back-pressure past capacity (chatsvc.realtime.overload): while the event loop or
the intake of frames lags, new messages are refused with `overloaded`; nothing
accepted is lost."""

import asyncio
import time

import pytest

from chatsvc.core import websocket_protocol
from chatsvc.core.websocket_protocol import ChatWebSocketProtocol
from chatsvc.realtime import overload
from tests import factories


@pytest.fixture
async def monitor():
    """An idle monitor (no timer) with a 100 ms threshold, fed samples by the test."""
    lag = overload.LagMonitor(asyncio.get_running_loop(), threshold_ms=100)
    lag.close()
    return lag


async def test_one_stall_does_not_trip_it_lasting_lag_does(monitor):
    monitor.observe(2.0)  # also not the very first sample
    assert not monitor.overloaded
    for sample in (0.0, 0.0, 2.0, 0.0, 0.0):  # a garbage collection, one slow callback
        monitor.observe(sample)
    assert not monitor.overloaded
    monitor.observe(0.3)
    assert not monitor.overloaded
    monitor.observe(0.3)  # two of the last three late
    assert monitor.overloaded and monitor.lag_ms == 300


async def test_it_recovers_below_half_the_threshold(monitor):
    for _ in range(5):
        monitor.observe(0.3)
    for _ in range(5):
        monitor.observe(0.07)  # under the threshold, over half of it: still refusing
    assert monitor.overloaded
    for _ in range(3):
        monitor.observe(0.01)
    assert not monitor.overloaded


async def test_one_overload_is_logged_once_however_often_it_trips(monitor, monkeypatch, caplog):
    clock = [0.0]
    monkeypatch.setattr(overload.time, "monotonic", lambda: clock[0])
    for _ in range(3):  # trips, recovers, trips again 2 s later: past capacity
        for lag in (0.3, 0.3, 0.0, 0.0):
            monitor.observe(lag)
        monitor.refusal("c")
        clock[0] += 2
    clock[0] += overload.QUIET_SECONDS
    monitor.observe(0.0)
    monitor.observe(0.0)  # logged once
    logged = [
        (r.message, getattr(r, "refused", None))
        for r in caplog.records
        if r.name == overload.logger.name
    ]
    assert logged == [("overloaded: refusing new messages", None), ("overload over", 3)]


async def test_a_refusal_carries_a_jittered_retry_hint(monitor):
    for _ in range(5):
        monitor.observe(0.3)
    hints = {monitor.refusal("c-1").retry_after_ms for _ in range(20)}
    assert all(300 <= hint <= 600 for hint in hints) and len(hints) > 1
    frame = monitor.refusal("c-1").frame()
    assert frame["code"] == "overloaded" and frame["ref"] == "c-1"
    assert monitor.refused == 21
    for _ in range(5):
        monitor.observe(60.0)
    assert monitor.refusal(None).retry_after_ms <= 2 * overload.MAX_RETRY_AFTER_MS


async def test_the_intake_wait_counts_like_the_loop_lag():
    lag = overload.LagMonitor(asyncio.get_running_loop(), threshold_ms=100)
    try:
        async with asyncio.timeout(5):
            while not lag.overloaded:  # frames keep waiting 300 ms; the loop itself is idle
                lag.note_intake(0.3)
                await asyncio.sleep(0.01)
        await until(lambda: not lag.overloaded)  # nothing waits any more
    finally:
        lag.close()


def test_the_protocol_reports_how_long_frames_wait_while_the_consumer_takes_them(
    monkeypatch,
):
    clock, waits = [0.0], []
    monkeypatch.setattr(websocket_protocol.time, "monotonic", lambda: clock[0])

    class Monitor:
        note_intake = waits.append

    monkeypatch.setattr(overload, "monitor", Monitor)
    protocol = ChatWebSocketProtocol()
    protocol.application_queue, protocol._arrivals = asyncio.Queue(), []
    protocol.muted, protocol.client_addr = False, ["127.0.0.1", 50000]
    queue = protocol.application_queue

    for _ in range(3):
        protocol.onMessage(b'{"type":"ping"}', False)
    clock[0] = 0.4
    queue.get_nowait()  # the consumer takes one: two wait since 0
    protocol.onMessage(b'{"type":"ping"}', False)
    assert waits == [0.4]
    clock[0] = 0.9
    protocol.onMessage(b'{"type":"ping"}', False)  # none taken: stuck on a slow call
    assert waits == [0.4]
    while not queue.empty():
        queue.get_nowait()
    clock[0] = 1.0
    protocol.onMessage(b'{"type":"ping"}', False)  # caught up: nothing waits
    assert waits == [0.4] and queue.qsize() == 1


async def test_a_zero_threshold_turns_it_off():
    lag = overload.LagMonitor(asyncio.get_running_loop(), threshold_ms=0)
    await asyncio.sleep(0.2)
    assert lag._timer is None and lag.lag_ms == 0 and not lag.overloaded


async def until(condition, timeout=10.0):
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


@pytest.mark.django_db(transaction=True)
async def test_a_lagging_loop_refuses_messages_then_accepts_them_again(world, connect, settings):
    settings.CHAT_OVERLOAD_LAG_MS = 100
    if (stale := overload._monitors.pop()) is not None:
        stale.close()
    room = world.room.connection_id
    ada = await connect(factories.token_for(world.acme, user_id="ada"), room=room)
    bob = await connect(factories.token_for(world.acme, user_id="bob"), room=room)
    joined_seq = (await ada.join(room))["seq"]  # a repeated join: the room's seq now
    lag = overload.monitor()

    loop, blocking = asyncio.get_running_loop(), [True]

    def block():  # a process busy past capacity: every turn of the loop takes 300 ms
        if blocking[0]:
            time.sleep(0.3)
            loop.call_later(0.01, block)

    loop.call_soon(block)
    await until(lambda: lag.overloaded)

    send = {"type": "send", "connection_id": room, "client_id": "c-1", "body": "hi"}
    await ada.send(send)
    error = await ada.expect("error", timeout=5)
    assert error["code"] == "overloaded" and error["ref"] == "c-1"
    assert error["retry_after_ms"] >= 100
    await ada.send({"type": "typing", "connection_id": room})  # dropped without an answer
    await ada.send({"type": "ping"})  # control frames pass
    assert (await ada.expect("pong", timeout=5, skip=("presence",)))["type"] == "pong"

    blocking[0] = False
    await until(lambda: not lag.overloaded)

    await ada.send(send)  # the same client_id, resent
    message = await ada.expect("message", timeout=5)
    ack = await ada.expect("ack", timeout=5)
    # The refused send took no seq: the accepted one is the room's next.
    assert message["seq"] == ack["seq"] == joined_seq + 1 and ack["client_id"] == "c-1"
    got = [frame["type"] for frame in await bob.drain()]
    assert "typing" not in got and got.count("message") == 1
