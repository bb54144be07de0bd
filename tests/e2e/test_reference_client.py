"""The reference browser client (chatsvc/static/chatsvc/chatsvc.js) in headless Chromium.

Three levels: the demo page chatting through the module against `run_local`; the
web process restarted (SIGTERM: sockets closed 1012) while two pages are sending;
and the module's resume/gap/de-dup logic against a fake socket in a blank page,
including content changes (edit, delete, react, moderate) and their sequenced events,
read positions (markRead: de-duplicated, throttled; receipts) and uploads (a fake fetch).
"""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from chatsvc.settings import BASE_DIR
from tests.conftest import free_port, service_missing
from tests.servers import ServerProcess, server_env

pytestmark = pytest.mark.e2e

MODULE = BASE_DIR / "chatsvc" / "static" / "chatsvc" / "chatsvc.js"
FAKE_ORIGIN = "http://chatsvc.test"
ROOM = "01HZX0000000000000000ROOM1"


@pytest.fixture
def context(browser):
    context = browser.new_context(bypass_csp=True)  # see new_page
    yield context
    context.close()


@pytest.fixture
def new_page(browser):
    """Pages in contexts of their own: two users, and no background-tab throttling."""
    contexts = []

    def new_page():
        # Playwright's wait_for_function evaluates strings, which the pages' CSP
        # forbids (no 'unsafe-eval'); test_demo_browser.py runs under the CSP.
        contexts.append(browser.new_context(bypass_csp=True))
        return contexts[-1].new_page()

    yield new_page
    for context in contexts:
        context.close()


# --- 1. the demo page, through the module, on run_local ------------------------------


def open_demo(new_page, base_url: str, name: str):
    page = new_page()
    page.goto(f"{base_url}/demo/?name={name}")
    expect(page.locator("#status")).to_have_text("connected", timeout=15000)
    # Record what the client reports, for the assertions below.
    page.evaluate(
        """() => {
            window.acks = []; window.statuses = []; window.joins = [];
            chatClient.on("ack", (ack) => acks.push(ack));
            chatClient.on("joined", (joined) => joins.push(joined));
            chatClient.on("status", (status) => statuses.push(status));
        }"""
    )
    return page


def say(page, text: str) -> None:
    page.fill("#body", text)
    page.click("#send")


def shown(page) -> list[str]:
    return page.locator("#messages .message").all_inner_texts()


def assert_seq_order(page) -> None:
    """Where the server gives seq, the client's messages are dense and ascending per epoch."""
    messages = page.evaluate(
        """() => {
            const room = JSON.parse(document.getElementById("connection-id").textContent);
            return chatClient.messages(room).map((m) => [m.epoch ?? null, m.seq ?? null]);
        }"""
    )
    by_epoch = {}
    for epoch, seq in messages:
        if seq is not None:
            by_epoch.setdefault(epoch, []).append(seq)
    for seqs in by_epoch.values():
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


def test_two_demo_pages_chat_through_the_module(local_service, new_page):
    alice = open_demo(new_page, local_service, "Alice")
    bob = open_demo(new_page, local_service, "Bob")
    assert alice.evaluate("typeof chatClient.send") == "function"  # the module is in use

    expected = []
    for i in range(5):
        say(alice, f"a{i}")
        say(bob, f"b{i}")
        expected += [f"Alice: a{i}", f"Bob: b{i}"]

    for page in (alice, bob):
        expect(page.locator("#messages .message")).to_have_count(10, timeout=15000)
        expect(page.locator("#status")).to_have_text("connected")
    assert shown(alice) == shown(bob)
    assert sorted(shown(alice)) == sorted(expected)  # each once
    for sender in ("Alice", "Bob"):  # each sender's messages in the order sent
        mine = [text for text in shown(alice) if text.startswith(sender)]
        assert mine == [text for text in expected if text.startswith(sender)]
    # The page shows messages in the client's order (ids are time-ordered here).
    ids = alice.locator("#messages .message").evaluate_all("ps => ps.map(p => p.dataset.id)")
    assert ids == sorted(ids) and len(set(ids)) == 10
    assert_seq_order(alice)
    assert_seq_order(bob)
    for page in (alice, bob):
        assert page.evaluate("chatClient.pending().length") == 0
        assert page.evaluate("acks.length") == 5


# --- 2. the web process restarted while two pages send --------------------------------


@pytest.fixture
def redis_for_restart(tmp_path):
    """Redis for the dedup store: the resend after a restart must reach what the old
    process remembered (in-process memory dies with it; production runs Redis)."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        service_missing("neither REDIS_URL nor redis-server is available")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    import redis

    client = redis.Redis(port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)


class Service:
    """moto (shared), Redis, SQLite, one web process on a fixed port and one worker."""

    def __init__(self, env: dict, tmp_path: Path):
        self.env = env
        self.tmp_path = tmp_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.webs: list[ServerProcess] = []
        self.worker = ServerProcess(
            args=["consume_queue", "--wait-seconds", "1", "--linger-ms", "100"],
            port=0,
            env=env,
            log=tmp_path / "worker.log",
        )
        self.start_web()

    def start_web(self) -> None:
        web = ServerProcess(
            args=["serve", "--host", "127.0.0.1", "--port", str(self.port)],
            port=self.port,
            env=self.env,
            log=self.tmp_path / f"web{len(self.webs)}.log",
        )
        self.webs.append(web)
        web.wait_ready("/readyz")

    def restart_web(self) -> None:
        """SIGTERM (a deploy): drain, close sockets 1012; then a new process, same port."""
        assert self.webs[-1].stop() == 0, self.webs[-1].log_path.read_text()
        self.start_web()

    def stop(self) -> None:
        for process in [*self.webs, self.worker]:
            process.stop()


@pytest.fixture
def service(aws, redis_for_restart, tmp_path):
    env = {
        **server_env(
            database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
            redis_url=redis_for_restart,
            aws=aws,
        ),
        "DEBUG": "true",  # /demo/ exists in local mode only
        "LOG_FORMAT": "console",
        "LOG_LEVEL": "INFO",
        "CHAT_DRAIN_SECONDS": "2",  # sockets close with 1012 within 2 s of SIGTERM
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
        cwd=BASE_DIR,
        env=env,
        check=True,
    )
    service = Service(env, tmp_path)
    yield service
    service.stop()


def test_pages_keep_chatting_through_a_web_process_restart(service, new_page):
    alice = open_demo(new_page, service.url, "Alice")
    bob = open_demo(new_page, service.url, "Bob")

    down = []  # when the old process was signalled, when the new one was ready
    failure = []

    def restart():
        try:
            down.append(time.monotonic())
            service.restart_web()
            down.append(time.monotonic())
        except BaseException as exc:
            failure.append(exc)

    expected = []
    sent_at = []
    restarter = threading.Thread(target=restart)
    rounds_after = 0
    for i in range(60):
        if i == 3:  # mid-conversation: the pages keep sending while the server drains
            restarter.start()  # and while it is down
        say(alice, f"a{i}")
        say(bob, f"b{i}")
        sent_at.append(time.monotonic())
        expected += [f"Alice: a{i}", f"Bob: b{i}"]
        alice.wait_for_timeout(300)
        if i > 3 and not restarter.is_alive():
            rounds_after += 1
            if rounds_after == 3:
                break
    restarter.join(90)
    assert not failure, failure
    assert len(service.webs) == 2
    assert any(down[0] < t < down[1] for t in sent_at), "no message sent while the server was down"
    assert sent_at[-1] > down[1], "no message sent after the restart"

    rounds = len(sent_at)
    for page in (alice, bob):
        # Every send acknowledged (resent with the same client_id after the restart) ...
        page.wait_for_function("chatClient.pending().length === 0", timeout=60000)
        assert page.evaluate("new Set(acks.map((a) => a.clientId)).size") == rounds
        # ... the 1012 seen and recovered from ...
        assert 1012 in page.evaluate("statuses.map((s) => s.code)")
        assert page.evaluate("joins.length") >= 1  # rejoined (recovered or from history)
        expect(page.locator("#status")).to_have_text("connected", timeout=30000)
        # ... and every message there once (late ones arrive from history).
        expect(page.locator("#messages .message")).to_have_count(2 * rounds, timeout=30000)

    assert shown(alice) == shown(bob)
    assert sorted(shown(alice)) == sorted(expected)
    ids = alice.locator("#messages .message").evaluate_all("ps => ps.map(p => p.dataset.id)")
    assert len(set(ids)) == 2 * rounds
    assert_seq_order(alice)
    assert_seq_order(bob)
    for page in (alice, bob):  # each page's acks are the messages shown
        acked = set(page.evaluate("acks.map((a) => a.id)"))
        assert acked <= set(ids) and len(acked) == rounds


# --- 3. the module's logic against a fake socket -----------------------------------------

HARNESS = """
(room) => {
  window.ROOM = room;
  window.sockets = [];
  window.FakeSocket = class {
    constructor(url) {
      this.url = url; this.readyState = 0; this.sent = [];
      sockets.push(this);
      setTimeout(() => { if (this.readyState === 0) { this.readyState = 1; this.onopen?.({}); } });
    }
    send(text) { this.sent.push(JSON.parse(text)); }
    close() { this.readyState = 3; }
    deliver(frame) { this.onmessage?.({ data: JSON.stringify(frame) }); }
    drop(code, reason = "") { this.readyState = 3; this.onclose?.({ code, reason }); }
  };
  window.last = () => sockets.at(-1);
  window.frames = (type) => last().sent.filter((f) => f.type === type);
  window.msg = (seq, extra = {}) => ({
    type: "message", connection_id: ROOM, id: `01M${String(seq).padStart(4, "0")}`, seq,
    sender: { id: "u2", name: "Bob" }, body: `m${seq}`, ts: "2030-01-01T00:00:00.000Z", ...extra,
  });
  window.item = (seq, extra) => { const { type, ...rest } = msg(seq, extra); return rest; };
  window.bodies = () => client.messages(ROOM).map((m) => m.body);
  window.seen = (name) => events.filter(([n]) => n === name).map(([, detail]) => detail);
  window.start = (options = {}) => {
    window.events = [];
    const client = new chatsvc.ChatClient({
      url: "ws://chatsvc.test/ws/v1/", token: "t1", rooms: [ROOM], WebSocket: FakeSocket,
      settleDelays: [], framesPerSecond: 1000, burst: 1000,
      reconnect: { base: 5, cap: 20, afterRestart: 10, afterFlood: 10 }, ...options,
    });
    for (const name of ["message", "status", "joined", "left", "ack", "error", "gap", "update",
                        "message_edited", "message_deleted", "reaction", "moderation", "read"]) {
      client.on(name, (detail) => events.push([name, detail]));
    }
    window.client = client;
    client.connect();
  };
}
"""


@pytest.fixture
def page(context):
    """A blank page on a made-up origin that imports the module as served."""

    def serve(route):
        if route.request.url.endswith("/static/chatsvc/chatsvc.js"):
            route.fulfill(body=MODULE.read_text(), content_type="text/javascript")
        else:
            route.fulfill(body="<!doctype html><title>client</title>", content_type="text/html")

    page = context.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text))  # no console noise
    page.route(f"{FAKE_ORIGIN}/**", serve)
    page.goto(f"{FAKE_ORIGIN}/")
    page.evaluate("async () => { window.chatsvc = await import('/static/chatsvc/chatsvc.js'); }")
    page.evaluate(HARNESS, ROOM)
    yield page
    assert errors == []


def connect(page, *, joined: dict, options: str = "{}") -> None:
    """Start a client, answer auth with ready and the join with `joined`."""
    page.evaluate(f"start({options})")
    page.wait_for_function("sockets.length === 1 && last().sent.length === 1")
    assert page.evaluate("last().sent[0]") == {"type": "auth", "token": "t1"}
    answer_join(page, joined)


def answer_join(page, joined: dict) -> None:
    page.evaluate(
        "last().deliver({type: 'ready', user: {id: 'u1', name: 'Alice', role: 'member'}})"
    )
    assert page.evaluate("seen('status').at(-1).state") == "connected"
    page.evaluate("(j) => last().deliver({type: 'joined', connection_id: ROOM, ...j})", joined)


def deliver(page, expression: str) -> None:
    page.evaluate(f"last().deliver({expression})")


def history(page, seqs: list[int], next_id=None) -> None:
    items = ", ".join(f"item({seq})" for seq in seqs)
    frame = f"{{type: 'history', connection_id: ROOM, messages: [{items}], next: {{next}}}}"
    deliver(page, frame.replace("{next}", json.dumps(next_id)))


def test_duplicates_are_shown_once_and_a_seq_gap_is_filled_from_history(page):
    connect(page, joined={"seq": 2, "epoch": "e1"})
    # A plain join without `recovered`: the client loads the room's history.
    assert page.evaluate("frames('history')") == [
        {"type": "history", "connection_id": ROOM, "limit": 50}
    ]
    history(page, [2, 1])
    assert page.evaluate("bodies()") == ["m1", "m2"]

    deliver(page, "msg(3)")
    deliver(page, "msg(3)")  # the same id again
    history(page, [3, 2])  # and once more from an unasked history answer
    assert page.evaluate("bodies()") == ["m1", "m2", "m3"]
    assert len(page.evaluate("frames('history')")) == 1

    deliver(page, "msg(6)")  # 4 and 5 were missed: a gap
    requests = page.evaluate("frames('history')")
    assert len(requests) == 2 and requests[1] == {
        "type": "history",
        "connection_id": ROOM,
        "limit": 100,
    }
    assert page.evaluate("bodies()") == ["m1", "m2", "m3"]  # 6 waits for the gap to close

    history(page, [6, 5, 4, 3], next_id="01M0003")
    deliver(page, "msg(5)")
    assert page.evaluate("bodies()") == ["m1", "m2", "m3", "m4", "m5", "m6"]
    # One "message" event per id, in seq order, each with its place in the room.
    events = page.evaluate("seen('message').map((m) => m.body)")
    assert events == ["m1", "m2", "m3", "m4", "m5", "m6"]
    assert len(page.evaluate("frames('history')")) == 2  # history reached what it had: done


def test_left_resync_rejoins_at_once_with_since_and_epoch(page):
    connect(page, joined={"seq": 0, "epoch": "e1"})
    history(page, [])
    deliver(page, "msg(1)")
    deliver(page, "msg(2)")

    deliver(page, "{type: 'left', connection_id: ROOM, reason: 'resync'}")
    assert page.evaluate("frames('join').at(-1)") == {
        "type": "join",
        "connection_id": ROOM,
        "since": 2,
        "epoch": "e1",
    }
    assert page.evaluate("seen('left')") == []  # not left for the integrator: still in the room

    # The server replays what was missed, then says it recovered: no history needed.
    deliver(page, "msg(3)")
    deliver(page, "{type: 'joined', connection_id: ROOM, seq: 3, epoch: 'e1', recovered: true}")
    assert page.evaluate("bodies()") == ["m1", "m2", "m3"]
    assert len(page.evaluate("frames('history')")) == 1
    assert page.evaluate("seen('joined').at(-1)") == {
        "connectionId": ROOM,
        "seq": 3,
        "epoch": "e1",
        "recovered": True,
    }

    # A new epoch: tracking restarts at the server's seq; the next live one is no gap.
    deliver(page, "{type: 'left', connection_id: ROOM, reason: 'resync'}")
    deliver(page, "{type: 'joined', connection_id: ROOM, seq: 7, epoch: 'e2', recovered: false}")
    assert len(page.evaluate("frames('history')")) == 2  # fills what the old epoch had
    history(page, [3])
    deliver(page, "msg(8, {id: '01M0100', body: 'e2-8'})")
    assert page.evaluate("bodies()") == ["m1", "m2", "m3", "e2-8"]
    assert len(page.evaluate("frames('history')")) == 2


def test_after_1012_it_reconnects_rejoins_and_resends_with_the_same_client_id(page):
    # Today's server: `joined` without seq, epoch or recovered.
    connect(page, joined={})
    history(page, [1])
    client_id = page.evaluate("client.send(ROOM, 'hello').clientId")
    assert page.evaluate("frames('send')") == [
        {"type": "send", "connection_id": ROOM, "client_id": client_id, "body": "hello"}
    ]

    page.evaluate("last().drop(1012)")  # a deploy: no ack, no echo
    assert page.evaluate("seen('status').at(-1)")["state"] == "reconnecting"
    page.wait_for_function("sockets.length === 2 && last().sent.length === 1")
    answer_join(page, {})
    # Not recovered: history again, and the unacked send once more, same client_id.
    assert page.evaluate("frames('join')") == [{"type": "join", "connection_id": ROOM}]
    assert page.evaluate("frames('history').length") == 1
    assert page.evaluate("frames('send')") == [
        {"type": "send", "connection_id": ROOM, "client_id": client_id, "body": "hello"}
    ]
    history(page, [1])

    ack = (
        f"{{type: 'ack', client_id: '{client_id}', id: '01M0002', ts: '2030-01-01T00:00:01.000Z'}}"
    )
    deliver(page, ack)
    deliver(page, ack)  # a repeated ack changes nothing
    assert page.evaluate("client.pending()") == []
    assert page.evaluate("bodies()") == ["m1", "hello"]  # the lost echo, rebuilt from the ack
    assert page.evaluate("seen('ack').map((a) => [a.clientId, a.id])") == [[client_id, "01M0002"]]
    deliver(page, "msg(2, {sender: {id: 'u1', name: 'Alice'}, body: 'hello'})")  # late echo
    assert page.evaluate("bodies()") == ["m1", "hello"]


def test_send_errors_are_retried_or_dropped_by_code(page):
    connect(page, joined={})
    history(page, [])
    retried = page.evaluate("client.send(ROOM, 'keep').clientId")
    dropped = page.evaluate("client.send(ROOM, 'x'.repeat(5000)).clientId")

    deliver(page, f"{{type: 'error', code: 'not_stored', message: 'resend', ref: '{retried}'}}")
    deliver(page, f"{{type: 'error', code: 'body_too_long', message: 'long', ref: '{dropped}'}}")
    page.wait_for_function("frames('send').length === 3", timeout=5000)  # after a backoff
    assert page.evaluate("frames('send').at(-1).client_id") == retried
    assert page.evaluate("client.pending().map((p) => p.clientId)") == [retried]
    errors = page.evaluate("seen('error').map((e) => [e.code, e.willRetry])")
    assert errors == [["not_stored", True], ["body_too_long", False]]


def test_an_overloaded_send_is_resent_no_sooner_than_the_server_asks(page):
    connect(page, joined={})
    history(page, [])
    retried = page.evaluate("client.send(ROOM, 'later').clientId")
    error = "{type: 'error', code: 'overloaded', message: 'busy', retry_after_ms: 1500, ref: '%s'}"
    deliver(page, error % retried)
    page.wait_for_timeout(1000)  # its own backoff alone would have resent by now (≤ 0.6 s)
    assert len(page.evaluate("frames('send')")) == 1
    page.wait_for_function("frames('send').length === 2", timeout=5000)
    assert page.evaluate("frames('send').at(-1).client_id") == retried


def test_a_busy_server_is_asked_again_no_sooner_than_it_says(page):
    """Admission: an auth or a join that got no turn comes with retry_after_ms."""
    page.evaluate("start()")
    page.wait_for_function("sockets.length === 1 && last().sent.length === 1")
    busy = "{type: 'error', code: 'overloaded', message: 'busy', retry_after_ms: 1500, ref: null}"
    deliver(page, busy)
    page.evaluate("last().drop(1013)")
    status = page.evaluate("seen('status').at(-1)")
    assert (status["state"], status["code"]) == ("reconnecting", 1013)
    assert status["delay"] >= 1500  # its own backoff is at most 20 ms in the harness

    page.wait_for_function("sockets.length === 2 && last().sent.length === 1", timeout=5000)
    page.evaluate(
        "last().deliver({type: 'ready', user: {id: 'u1', name: 'Alice', role: 'member'}})"
    )
    joins = len(page.evaluate("frames('join')"))
    deliver(page, busy.replace("ref: null", "ref: ROOM, connection_id: ROOM"))
    page.wait_for_timeout(1300)  # its own backoff alone would have joined again (≤ 1.25 s)
    assert len(page.evaluate("frames('join')")) == joins
    page.wait_for_function(f"frames('join').length === {joins + 1}", timeout=5000)


def test_close_codes_4401_refreshes_the_token_and_4403_stops(page):
    connect(page, joined={}, options="{getToken: async () => 't2'}")
    page.evaluate("last().drop(4401)")
    page.wait_for_function("sockets.length === 2 && last().sent.length === 1")
    assert page.evaluate("last().sent[0]") == {"type": "auth", "token": "t2"}
    answer_join(page, {})

    page.evaluate("last().drop(4403)")
    page.wait_for_timeout(300)
    assert page.evaluate("sockets.length") == 2  # never reconnects
    assert page.evaluate("seen('status').at(-1)") == {"state": "stopped", "code": 4403}
    assert page.evaluate("client.state") == "stopped"


@pytest.mark.parametrize("code", [1001, 1006, 1009, 1012, 4408, 4429])
def test_other_close_codes_reconnect_with_backoff(page, code):
    connect(page, joined={"seq": 0, "epoch": "e1"})
    page.evaluate(f"last().drop({code})")
    status = page.evaluate("seen('status').at(-1)")
    assert status["state"] == "reconnecting" and status["code"] == code
    if code == 4429:  # flooding: a longer wait first (afterFlood is 10 ms in the harness)
        assert status["delay"] >= 10
    page.wait_for_function("sockets.length === 2 && last().sent.length === 1")
    answer_join(page, {"seq": 0, "epoch": "e1", "recovered": True})
    assert page.evaluate("frames('join')") == [
        {"type": "join", "connection_id": ROOM, "since": 0, "epoch": "e1"}
    ]


# --- protocol additions: multi-join, control pacing, auth diagnostics, ack order ----------

ROOMS = [f"01HZX0000000000000000RM{n:03d}" for n in range(25)]


def test_rooms_are_joined_twenty_per_frame_and_resume_per_room(page):
    page.evaluate(f"start({{rooms: {json.dumps(ROOMS)}}})")
    page.wait_for_function("sockets.length === 1 && last().sent.length === 1")
    page.evaluate(
        "last().deliver({type: 'ready', user: {id: 'u1', name: 'Alice', role: 'member'}})"
    )
    assert page.evaluate("frames('join')") == [
        {"type": "join", "connection_ids": ROOMS[:20]},
        {"type": "join", "connection_ids": ROOMS[20:]},
    ]
    # Each room answers on its own; one is refused, with its connection_id.
    for n, room in enumerate(ROOMS):
        if n == 3:
            error = {"type": "error", "code": "not_found", "message": "no such room"}
            page.evaluate("(e) => last().deliver(e)", {**error, "ref": room, "connection_id": room})
        else:
            page.evaluate(
                "(id) => last().deliver({type: 'joined', connection_id: id, seq: 5, epoch: 'e'})",
                room,
            )
    assert page.evaluate("seen('joined').length") == 24
    assert page.evaluate("seen('error').map((e) => [e.code, e.connection_id, e.willRetry])") == [
        ["not_found", ROOMS[3], False]
    ]
    rooms = [room for n, room in enumerate(ROOMS) if n != 3]
    refused = "(room) => { try { client.send(room, 'x'); return false; } catch { return true; } }"
    assert page.evaluate(refused, ROOMS[3])  # the refused room was forgotten

    page.evaluate("last().drop(1006)")
    page.wait_for_function("sockets.length === 2 && last().sent.length === 1")
    page.evaluate(
        "last().deliver({type: 'ready', user: {id: 'u1', name: 'Alice', role: 'member'}})"
    )
    assert page.evaluate("frames('join')") == [
        {
            "type": "join",
            "connection_ids": rooms[:20],
            "since": {room: 5 for room in rooms[:20]},
            "epoch": {room: "e" for room in rooms[:20]},
        },
        {
            "type": "join",
            "connection_ids": rooms[20:],
            "since": {room: 5 for room in rooms[20:]},
            "epoch": {room: "e" for room in rooms[20:]},
        },
    ]


def test_control_frames_are_not_paced_behind_sends(page):
    options = "{framesPerSecond: 1, burst: 1, controlFramesPerSecond: 1000, controlBurst: 1000}"
    connect(page, joined={"seq": 0, "epoch": "e1"}, options=options)
    history(page, [])
    for body in ("a", "b", "c"):
        page.evaluate(f"client.send(ROOM, {body!r})")
    page.evaluate("() => { client.history(ROOM, {limit: 10}); }")  # answered never
    page.evaluate("client.join('01HZX0000000000000000ROOM2')")
    assert len(page.evaluate("frames('send')")) == 1  # the message bucket: one now, then 1/s
    assert page.evaluate("frames('history').at(-1)") == {
        "type": "history",
        "connection_id": ROOM,
        "limit": 10,
    }
    assert page.evaluate("frames('join').at(-1)") == {
        "type": "join",
        "connection_id": "01HZX0000000000000000ROOM2",
    }


def test_auth_errors_are_surfaced_with_the_servers_message(page):
    page.evaluate("start({getToken: async () => 't2'})")
    page.wait_for_function("sockets.length === 1 && last().sent.length === 1")
    expired = "token expired 5 min 0 s ago (exp 1, server time 301, 30 s grace)"
    deliver(page, f"{{type: 'error', code: 'bad_token', message: {expired!r}, ref: null}}")
    page.evaluate(f"last().drop(4401, {expired!r})")
    assert page.evaluate("seen('error')") == [
        {"code": "bad_token", "message": expired, "ref": None, "willRetry": True}
    ]
    status = page.evaluate("seen('status').at(-1)")
    assert (status["state"], status["code"], status["reason"]) == ("reconnecting", 4401, expired)

    # A server that sends no close reason: the error frame's message is the reason.
    page.wait_for_function("sockets.length === 2 && last().sent.length === 1")
    assert page.evaluate("last().sent[0]") == {"type": "auth", "token": "t2"}
    deliver(page, "{type: 'error', code: 'forbidden', message: 'tenant disabled', ref: null}")
    page.evaluate("last().drop(4403)")
    assert page.evaluate("seen('error').at(-1).willRetry") is False
    assert page.evaluate("seen('status').at(-1)") == {
        "state": "stopped",
        "code": 4403,
        "reason": "tenant disabled",
    }


def test_the_ack_may_come_before_the_senders_own_message(page):
    connect(page, joined={"seq": 0, "epoch": "e1"})
    history(page, [])
    client_id = page.evaluate("client.send(ROOM, 'hello').clientId")
    deliver(
        page,
        f"{{type: 'ack', client_id: '{client_id}', id: '01M0001', seq: 1, "
        "ts: '2030-01-01T00:00:00.000Z'}",
    )
    deliver(page, "msg(1, {sender: {id: 'u1', name: 'Alice'}, body: 'hello'})")
    deliver(page, "msg(2)")
    assert page.evaluate("bodies()") == ["hello", "m2"]
    assert page.evaluate("seen('message').length") == 2
    assert page.evaluate("client.pending()") == []
    assert len(page.evaluate("frames('history')")) == 1  # no gap: seq 1 came with the ack


# --- content changes: edit, delete, react, moderate and their events ------------------------

EVENTS = """
(room) => {
  const ts = "2030-01-01T00:01:00.000Z";
  const by = { id: "u2", name: "Bob" };
  const id = (seq) => `01M${String(seq).padStart(4, "0")}`;
  window.edited = (seq, target, body) => ({ type: "message_edited", connection_id: room,
    id: id(seq), seq, message_id: id(target), body, by, ts });
  window.deleted = (seq, target) => ({ type: "message_deleted", connection_id: room,
    id: id(seq), seq, message_id: id(target), by, moderated: false, ts });
  window.reacted = (seq, target, reactions) => ({ type: "reaction", connection_id: room,
    id: id(seq), seq, message_id: id(target), emoji: "👍", user: by, added: true, reactions, ts });
  window.moderated = (seq) => ({ type: "moderation", connection_id: room, id: id(seq), seq,
    action: "muted", user: { id: "u3" }, by, until: "2030-01-01T00:11:00.000Z", reason: null, ts });
  // A change's promise, kept to look at: window.results[clientId] = {ack} or {error}.
  window.results = {};
  window.track = (promise) => {
    promise.then((ack) => { results[promise.clientId] = { ack }; },
                 (error) => { results[promise.clientId] = { error: [error.name, error.code] }; });
    return promise.clientId;
  };
  window.state = () => client.messages(room).map((m) => {
    const { connection_id, sender, ts, epoch, ...rest } = m;
    return rest;
  });
}
"""


def with_events(page) -> None:
    page.evaluate(EVENTS, ROOM)


def test_content_events_take_seqs_change_messages_and_resume_counts_them(page):
    connect(page, joined={"seq": 1, "epoch": "e1"})
    with_events(page)
    history(page, [1])
    reactions = [{"emoji": "👍", "count": 1, "user_ids": ["u2"]}]
    deliver(page, "edited(2, 1, 'm1 fixed')")
    deliver(page, "msg(3)")  # seq 2 was the edit: no gap
    deliver(page, f"reacted(4, 3, {json.dumps(reactions)})")
    deliver(page, "moderated(5)")
    deliver(page, "deleted(6, 1)")
    deliver(page, "edited(2, 1, 'm1 fixed')")  # replayed again: dropped by id
    deliver(page, "msg(7)")
    assert len(page.evaluate("frames('history')")) == 1  # never a gap
    assert page.evaluate("state()") == [
        {
            "id": "01M0001",
            "seq": 1,
            "deleted": True,
            "deleted_at": "2030-01-01T00:01:00.000Z",
            "deleted_by": {"id": "u2", "name": "Bob"},
        },
        {"id": "01M0003", "seq": 3, "body": "m3", "reactions": reactions},
        {"id": "01M0007", "seq": 7, "body": "m7"},
    ]
    # Each event once, by its type: (event without type, the message or null, its index).
    assert page.evaluate("seen('message_edited').map((e) => [e.seq, e.body])") == [[2, "m1 fixed"]]
    assert page.evaluate("seen('moderation').map((e) => [e.action, e.user.id])") == [
        ["muted", "u3"]
    ]
    assert page.evaluate("seen('reaction')[0].reactions") == reactions
    assert page.evaluate("seen('update').map((m) => m.id)") == ["01M0001", "01M0003", "01M0001"]
    assert page.evaluate("seen('message').length") == 3  # events are not messages

    # The resume counts the events: since is the last seq of either kind.
    page.evaluate("last().drop(1006)")
    page.wait_for_function("sockets.length === 2 && last().sent.length === 1")
    answer_join(page, {"seq": 7, "epoch": "e1", "recovered": True})
    assert page.evaluate("frames('join')") == [
        {"type": "join", "connection_id": ROOM, "since": 7, "epoch": "e1"}
    ]


def test_a_gap_of_events_is_closed_by_history_state(page):
    connect(page, joined={"seq": 2, "epoch": "e1"})
    with_events(page)
    history(page, [2, 1])
    # 3 (an edit of m1) and 4 (a reaction on m2) are missed; 5 arrives: a gap.
    deliver(page, "msg(5)")
    deliver(page, "edited(6, 5, 'm5 fixed')")  # held behind the gap too
    assert page.evaluate("bodies()") == ["m1", "m2"]
    assert len(page.evaluate("frames('history')")) == 2
    # History has no events, but its copies show their effect; it reached what was held.
    reactions = [{"emoji": "👍", "count": 2, "user_ids": ["u2", "u3"]}]
    fixed = "{body: 'm1 fixed', edited_at: '2030-01-01T00:01:00.000Z'}"
    items = f"[item(5), item(2, {{reactions: {json.dumps(reactions)}}}), item(1, {fixed})]"
    deliver(page, f"{{type: 'history', connection_id: ROOM, messages: {items}, next: null}}")
    assert page.evaluate("bodies()") == ["m1 fixed", "m2", "m5 fixed"]
    assert page.evaluate("client.messages(ROOM)[1].reactions") == reactions
    deliver(page, "msg(7)")  # 3 and 4 were counted as events: no gap
    assert page.evaluate("bodies()") == ["m1 fixed", "m2", "m5 fixed", "m7"]
    assert len(page.evaluate("frames('history')")) == 2
    assert page.evaluate("seen('gap')") == []
    # An older event seen late (a replay) does not undo what history showed.
    deliver(page, "edited(3, 1, 'older')")
    assert page.evaluate("bodies()")[0] == "m1 fixed"


def test_changes_are_acked_resent_with_the_same_client_id_and_rejected_by_code(page):
    connect(page, joined={"seq": 1, "epoch": "e1"})
    with_events(page)
    history(page, [1])
    edit = page.evaluate("track(client.edit(ROOM, '01M0001', 'better'))")
    react = page.evaluate("track(client.react(ROOM, '01M0001', '👍'))")
    delete = page.evaluate("track(client.deleteMessage(ROOM, '01M0001'))")
    mod = page.evaluate("track(client.moderate(ROOM, 'mute', 'u3', {seconds: 600}))")
    assert page.evaluate("last().sent.filter((f) => f.client_id).map((f) => f.type)") == [
        "edit",
        "react",
        "delete",
        "moderate",
    ]
    assert page.evaluate("frames('edit')") == [
        {
            "type": "edit",
            "connection_id": ROOM,
            "client_id": edit,
            "message_id": "01M0001",
            "body": "better",
        }
    ]
    assert page.evaluate("frames('moderate')") == [
        {
            "type": "moderate",
            "connection_id": ROOM,
            "client_id": mod,
            "action": "mute",
            "user_id": "u3",
            "seconds": 600,
        }
    ]
    assert page.evaluate("client.pending().map((p) => [p.type, p.messageId ?? p.userId])") == [
        ["edit", "01M0001"],
        ["react", "01M0001"],
        ["delete", "01M0001"],
        ["moderate", "u3"],
    ]

    # The edit is acked; the others are lost with the connection and sent again after it.
    ts = "2030-01-01T00:01:00Z"
    ack = {"type": "ack", "client_id": edit, "id": "01M0002", "seq": 2, "ts": ts}
    page.evaluate("(a) => last().deliver(a)", ack)
    page.wait_for_function(f"results[{edit!r}] !== undefined")
    assert page.evaluate(f"results[{edit!r}]") == {
        "ack": {
            "clientId": edit,
            "connectionId": ROOM,
            "type": "edit",
            "id": "01M0002",
            "seq": 2,
            "ts": ts,
        }
    }
    page.evaluate("last().drop(1006)")
    page.wait_for_function("sockets.length === 2 && last().sent.length === 1")
    answer_join(page, {"seq": 1, "epoch": "e1", "recovered": True})
    again = page.evaluate("last().sent.filter((f) => f.client_id).map((f) => f.client_id)")
    assert again == [react, delete, mod]

    # busy is retried with the same client_id; forbidden and muted reject the promise.
    deliver(page, f"{{type: 'error', code: 'busy', message: 'retry', ref: {react!r}}}")
    page.wait_for_function(f"frames('react').filter((f) => f.client_id === {react!r}).length == 2")
    deliver(page, f"{{type: 'error', code: 'forbidden', message: 'no', ref: {delete!r}}}")
    deliver(page, f"{{type: 'error', code: 'muted', message: 'shh', ref: {mod!r}}}")
    page.wait_for_function(f"results[{delete!r}] && results[{mod!r}]")
    assert page.evaluate(f"results[{delete!r}]") == {"error": ["ChatError", "forbidden"]}
    assert page.evaluate(f"results[{mod!r}]") == {"error": ["ChatError", "muted"]}
    errors = page.evaluate("seen('error').map((e) => [e.code, e.willRetry, e.change.type])")
    assert errors == [
        ["busy", True, "react"],
        ["forbidden", False, "delete"],
        ["muted", False, "moderate"],
    ]
    assert page.evaluate("client.pending().map((p) => p.clientId)") == [react]

    # Leaving rejects what is still pending; changes to a room not joined reject at once.
    page.evaluate("client.leave(ROOM)")
    page.wait_for_function(f"results[{react!r}] !== undefined")
    assert page.evaluate(f"results[{react!r}]") == {"error": ["ChatError", "left"]}
    rejected = page.evaluate(
        "client.edit('01HZX0000000000000000ROOM9', '01M0001', 'x')"
        ".then(() => 'ok', (e) => e.message)"
    )
    assert "join" in rejected


# --- read positions and receipts -----------------------------------------------------------


def test_mark_read_is_deduplicated_and_throttled_per_room(page):
    connect(page, joined={"seq": 5, "epoch": "e1"}, options="{readInterval: 300}")
    history(page, [5, 4])
    reads = "frames('read').map((f) => [f.connection_id, f.seq])"
    # No seq: the room's position (events included). Sent at once: nothing went out before.
    assert page.evaluate("client.markRead(ROOM)") is True
    assert page.evaluate(reads) == [[ROOM, 5]]
    # Never the same or a lower seq again.
    assert page.evaluate("[client.markRead(ROOM, 5), client.markRead(ROOM, 3)]") == [False, False]
    # Within the interval: folded into one frame with the latest, at the end of it.
    assert page.evaluate("[6, 8, 7].map((seq) => client.markRead(ROOM, seq))") == [
        True,
        True,
        False,
    ]
    assert page.evaluate(reads) == [[ROOM, 5]]
    page.wait_for_function("frames('read').length === 2", timeout=2000)
    assert page.evaluate(reads) == [[ROOM, 5], [ROOM, 8]]
    page.wait_for_timeout(400)
    assert len(page.evaluate(reads)) == 2  # nothing more was asked for
    # Rooms the client is not in, and nonsense, send nothing.
    assert page.evaluate("client.markRead('01HZX0000000000000000ROOM9', 3)") is False
    assert page.evaluate("client.markRead(ROOM, 'x')") is False

    # Asked for while disconnected: sent once the room is joined again.
    page.evaluate("last().drop(1006)")
    assert page.evaluate("client.markRead(ROOM, 9)") is True
    page.wait_for_function("sockets.length === 2 && last().sent.length === 1")
    answer_join(page, {"seq": 9, "epoch": "e1", "recovered": True})
    page.wait_for_function("frames('read').length === 1", timeout=2000)
    assert page.evaluate(reads) == [[ROOM, 9]]


def test_receipts_keep_each_readers_highest_seq(page):
    connect(page, joined={"seq": 5, "epoch": "e1"})
    history(page, [5])
    receipt = "(r) => last().deliver({type: 'read', connection_id: ROOM, ...r})"
    for user, name, seq in [
        ("u2", "Bob", 4),
        ("u3", "Cy", 5),
        ("u2", "Bob", 3),
        ("u1", "Alice", 5),
    ]:
        # Bob's 3 is older (positions never go back); u1 is the user's other device.
        page.evaluate(receipt, {"user": {"id": user, "name": name}, "seq": seq})
    assert page.evaluate("client.readers(ROOM)") == {"u2": 4, "u3": 5, "u1": 5}
    assert page.evaluate("seen('read')") == [
        {"connection_id": ROOM, "user": {"id": "u2", "name": "Bob"}, "seq": 4},
        {"connection_id": ROOM, "user": {"id": "u3", "name": "Cy"}, "seq": 5},
        {"connection_id": ROOM, "user": {"id": "u1", "name": "Alice"}, "seq": 5},
    ]
    assert page.evaluate("client.readers('01HZX0000000000000000ROOM9')") == {}
    # A new epoch: positions of the old one mean nothing.
    deliver(page, "{type: 'left', connection_id: ROOM, reason: 'resync'}")
    deliver(page, "{type: 'joined', connection_id: ROOM, seq: 2, epoch: 'e2', recovered: false}")
    assert page.evaluate("client.readers(ROOM)") == {}


# --- uploads and sends with attachments ----------------------------------------------------

FAKE_FETCH = """
() => {
  // What upload() POSTs, and what storage answers: window.storageAnswers, in order
  // (a status, or "throw" for a network/CORS failure); 204 when none is left.
  window.posts = [];
  window.storageAnswers = [];
  window.fakeFetch = async (url, init) => {
    const entries = [...init.body.entries()].map(([key, value]) =>
      [key, typeof value === "string" ? value : `file:${value.name}:${value.size}`]);
    posts.push({ url, method: init.method, entries });
    const answer = storageAnswers.shift() ?? 204;
    if (answer === "throw") throw new TypeError("Failed to fetch");
    return { ok: answer >= 200 && answer < 300, status: answer };
  };
  window.png = () =>
    new File([new Uint8Array([137, 80, 78, 71])], "dot.png", { type: "image/png" });
}
"""

GRANT = {
    "url": "http://storage.test/bucket",
    "fields": {"key": "t/r/01UP/dot.png", "Content-Type": "image/png", "policy": "p"},
    "expires_at": 1900000000,
    "max_bytes": 10485760,
}


def grant(page, client_id: str, upload_id: str) -> None:
    frame = {"type": "upload", "connection_id": ROOM, "client_id": client_id, "id": upload_id}
    page.evaluate("(f) => last().deliver(f)", {**frame, **GRANT})


def test_upload_asks_for_a_grant_posts_the_file_and_resolves_with_its_id(page):
    page.evaluate(FAKE_FETCH)
    connect(page, joined={"seq": 1, "epoch": "e1"}, options="{fetch: fakeFetch}")
    with_events(page)
    history(page, [1])
    upload = page.evaluate("track(client.upload(ROOM, png()))")
    assert page.evaluate("frames('upload')") == [
        {
            "type": "upload",
            "connection_id": ROOM,
            "client_id": upload,
            "name": "dot.png",
            "content_type": "image/png",
            "size": 4,
        }
    ]
    assert page.evaluate("client.pending()") == []  # the promise tells how an upload goes
    grant(page, upload, "01UP0000000000000000000001")
    page.wait_for_function(f"results[{upload!r}] !== undefined")
    assert page.evaluate(f"results[{upload!r}]") == {"ack": "01UP0000000000000000000001"}
    # Every field first, in the grant's order, the file last, as `file`.
    assert page.evaluate("posts") == [
        {
            "url": "http://storage.test/bucket",
            "method": "POST",
            "entries": [
                ["key", "t/r/01UP/dot.png"],
                ["Content-Type", "image/png"],
                ["policy", "p"],
                ["file", "file:dot.png:4"],
            ],
        }
    ]

    # The send names the upload; the ack alone does not show it (no links yet) ...
    client_id = page.evaluate(
        "client.send(ROOM, '', {attachments: ['01UP0000000000000000000001']}).clientId"
    )
    assert page.evaluate("frames('send')") == [
        {
            "type": "send",
            "connection_id": ROOM,
            "client_id": client_id,
            "body": "",
            "attachments": ["01UP0000000000000000000001"],
        }
    ]
    ts = "2030-01-01T00:00:01.000Z"
    page.evaluate(
        "(a) => last().deliver(a)",
        {"type": "ack", "client_id": client_id, "id": "01M0002", "seq": 2, "ts": ts},
    )
    assert page.evaluate("bodies()") == ["m1"]
    assert page.evaluate("client.pending()") == []
    # ... its echo does, with the attachments.
    files = [
        {
            "id": "01UP0000000000000000000001",
            "name": "dot.png",
            "content_type": "image/png",
            "size": 4,
            "url": "http://storage.test/bucket/dot.png?sig",
            "url_expires_at": 1900000000,
        }
    ]
    echo = {"sender": {"id": "u1", "name": "Alice"}, "body": "", "attachments": files}
    page.evaluate("(extra) => last().deliver(msg(2, extra))", echo)
    assert page.evaluate("client.messages(ROOM).at(-1).attachments") == files
    deliver(page, "msg(3)")
    assert len(page.evaluate("frames('history')")) == 1  # no gap


def test_uploads_are_rejected_with_the_servers_code_or_upload_failed(page):
    page.evaluate(FAKE_FETCH)
    connect(page, joined={"seq": 1, "epoch": "e1"}, options="{fetch: fakeFetch}")
    with_events(page)
    history(page, [1])
    too_large = page.evaluate("track(client.upload(ROOM, png()))")
    retried = page.evaluate("track(client.upload(ROOM, png()))")
    refused = page.evaluate("track(client.upload(ROOM, png()))")
    unreachable = page.evaluate("track(client.upload(ROOM, png()))")
    # Refused by the server: its code; rate_limited is asked again, same client_id.
    error = "{{type: 'error', code: '{code}', message: 'no', ref: '{ref}'}}"
    deliver(page, error.format(code="attachment_too_large", ref=too_large))
    deliver(page, error.format(code="rate_limited", ref=retried))
    resent = f"frames('upload').filter((f) => f.client_id === {retried!r}).length == 2"
    page.wait_for_function(resent)
    page.wait_for_function(f"results[{too_large!r}] !== undefined")
    assert page.evaluate(f"results[{too_large!r}]") == {
        "error": ["ChatError", "attachment_too_large"]
    }
    errors = page.evaluate("seen('error').map((e) => [e.code, e.willRetry, e.upload.name])")
    assert errors == [["attachment_too_large", False, "dot.png"], ["rate_limited", True, "dot.png"]]
    # Refused by storage (HTTP 403), or not reached at all (network, CSP, CORS): upload_failed.
    page.evaluate("storageAnswers.push(403, 'throw')")
    grant(page, refused, "01UP0000000000000000000002")
    grant(page, unreachable, "01UP0000000000000000000003")
    page.wait_for_function(f"results[{refused!r}] && results[{unreachable!r}]")
    for client_id in (refused, unreachable):
        assert page.evaluate(f"results[{client_id!r}]") == {"error": ["ChatError", "upload_failed"]}
    grant(page, retried, "01UP0000000000000000000004")
    page.wait_for_function(f"results[{retried!r}] !== undefined")
    assert page.evaluate(f"results[{retried!r}]") == {"ack": "01UP0000000000000000000004"}
    # A send refused for its attachment says which ones it carried.
    client_id = page.evaluate(
        "client.send(ROOM, 'x', {attachments: ['01UP0000000000000000000004']}).clientId"
    )
    deliver(page, error.format(code="attachment_rejected", ref=client_id))
    assert page.evaluate("seen('error').at(-1).send") == {
        "clientId": client_id,
        "connectionId": ROOM,
        "body": "x",
        "attachments": ["01UP0000000000000000000004"],
    }
    rejected = page.evaluate(
        "client.upload('01HZX0000000000000000ROOM9', png()).then(() => 'ok', (e) => e.message)"
    )
    assert "join" in rejected
