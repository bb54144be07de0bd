"""Every bad input gets a clear error or close code, and never hurts other sockets."""

import time

import jwt
import pytest

from chatsvc.core.ulid import new_ulid
from chatsvc.tenants.services import revoke_key, set_active
from tests import factories
from tests.realtime.conftest import async_db, queued_bodies

pytestmark = pytest.mark.django_db(transaction=True)


async def set_limits(tenant, **limits):
    await async_db(type(tenant).objects.filter(pk=tenant.pk).update)(**limits)


def send_frame(room, client_id="c1", body="hi"):
    return {"type": "send", "connection_id": room, "client_id": client_id, "body": body}


# --- authentication ------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example.com", "", "127.0.0.1.evil.example:80"])
async def test_the_websocket_handshake_obeys_allowed_hosts(world, host):
    from channels.testing import WebsocketCommunicator

    from chatsvc.asgi import application

    communicator = WebsocketCommunicator(application, "/ws/v1/", headers=[(b"host", host.encode())])
    connected, code = await communicator.connect()
    assert not connected and code == 4403


async def test_first_frame_must_be_auth(world, connect):
    client = await connect()
    await client.send({"type": "join", "connection_id": world.room.connection_id})
    error = await client.expect("error")
    assert error["code"] == "not_authenticated"
    assert error["message"] == "the first frame must be auth, not 'join'"
    await client.expect_closed(4401)


async def test_no_auth_within_the_deadline_closes_4408(world, connect, settings):
    settings.CHAT_AUTH_TIMEOUT_SECONDS = 1
    client = await connect()
    error = await client.expect("error", timeout=3)
    assert error["code"] == "not_authenticated"
    assert error["message"] == "no auth frame within 1 s"
    await client.expect_closed(4408, timeout=3)


def forged(issued, **claims):
    now = int(time.time())
    payload = {"sub": "u", "cids": ["*"], "iat": now, "exp": now + 600, **claims}
    return payload


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(
            lambda w: jwt.encode(
                forged(w.acme),
                "not-the-secret-but-long-enough-for-hs256-keys",
                algorithm="HS256",
                headers={"kid": w.acme.key.key_id},
            ),
            id="bad-signature",
        ),
        pytest.param(
            lambda w: jwt.encode(
                forged(w.acme, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
                w.acme.signing_secret,
                algorithm="HS256",
                headers={"kid": w.acme.key.key_id},
            ),
            id="expired",
        ),
        pytest.param(
            lambda w: jwt.encode(
                forged(w.acme), w.acme.signing_secret, algorithm="HS256", headers={"kid": "nope"}
            ),
            id="unknown-kid",
        ),
        pytest.param(
            lambda w: jwt.encode(
                forged(w.acme, exp=int(time.time()) + 2 * 86400),
                w.acme.signing_secret,
                algorithm="HS256",
                headers={"kid": w.acme.key.key_id},
            ),
            id="lifetime-over-24h",
        ),
        pytest.param(
            lambda w: jwt.encode(
                forged(w.acme, sub="user\u0000", name="x"),
                w.acme.signing_secret,
                algorithm="HS256",
                headers={"kid": w.acme.key.key_id},
            ),
            id="sub-not-storable",
        ),
        pytest.param(lambda w: "not.a.jwt", id="garbage"),
        pytest.param(lambda w: 42, id="not-a-string"),
    ],
)
async def test_bad_tokens_close_4401(world, connect, make_token):
    client = await connect()
    await client.send({"type": "auth", "token": make_token(world)})
    await client.expect_closed(4401)


async def test_revoked_key_closes_4401(world, connect):
    token = factories.token_for(world.acme)
    await async_db(revoke_key)(key=world.acme.key)
    client = await connect()
    await client.send({"type": "auth", "token": token})
    await client.expect_closed(4401)


async def test_inactive_tenant_closes_4403(world, connect):
    token = factories.token_for(world.acme)
    await async_db(set_active)(tenant=world.acme.tenant, active=False)
    client = await connect()
    await client.send({"type": "auth", "token": token})
    await client.expect_closed(4403)


async def test_revoking_a_key_closes_its_live_sockets_only(world, connect):
    from chatsvc.tenants.services import rotate_key

    newer = await async_db(rotate_key)(tenant=world.acme.tenant)
    room = world.room.connection_id
    old_socket = await connect(factories.token_for(world.acme, user_id="old"), room=room)
    new_socket = await connect(factories.token_for(newer, user_id="new"), room=room)

    await async_db(revoke_key)(key=world.acme.key)

    await old_socket.expect_closed(4401)
    await new_socket.send({"type": "ping"})
    assert (await new_socket.expect("pong"))["type"] == "pong"


async def test_deactivating_a_tenant_closes_its_sockets_4403_and_spares_others(world, connect):
    acme_socket = await connect(factories.token_for(world.acme), room=world.room.connection_id)
    other_socket = await connect(
        factories.token_for(world.other), room=world.other_room.connection_id
    )

    await async_db(set_active)(tenant=world.acme.tenant, active=False)

    await acme_socket.expect_closed(4403)
    await other_socket.send({"type": "ping"})
    assert (await other_socket.expect("pong"))["type"] == "pong"


async def test_origin_outside_the_tenants_list_closes_4403(transactional_db, aws, connect):
    issued = await async_db(factories.tenant_with_key)("lms", origins=["https://lms.example.edu"])
    token = factories.token_for(issued)
    allowed = await connect(origin="https://lms.example.edu")
    assert (await allowed.auth(token))["type"] == "ready"
    denied = await connect(origin="https://evil.example.com")
    await denied.send({"type": "auth", "token": token})
    await denied.expect_closed(4403)


async def test_auth_twice_is_an_error_not_a_close(world, connect):
    token = factories.token_for(world.acme)
    client = await connect(token)
    await client.send({"type": "auth", "token": token})
    assert (await client.expect("error"))["code"] == "already_authenticated"


# --- rooms ---------------------------------------------------------------------------


async def test_rooms_that_are_not_yours_look_missing(world, connect):
    own_room_not_in_token = await async_db(factories.room_for)(world.acme, "Private")
    token = factories.token_for(world.acme, rooms=[world.room.connection_id])
    client = await connect(token)
    for connection_id in (
        world.other_room.connection_id,  # another tenant's
        own_room_not_in_token.connection_id,  # not in the token's cids
        new_ulid(),  # does not exist
        "not-a-ulid",
    ):
        await client.send({"type": "join", "connection_id": connection_id})
        error = await client.expect("error")
        assert error["code"] == "not_found" and error["message"] == "no such room"
    await client.join(world.room.connection_id)


async def test_send_to_a_room_not_joined_names_the_client_id(world, connect):
    client = await connect(factories.token_for(world.acme))
    await client.send(send_frame(world.room.connection_id, client_id="abc"))
    error = await client.expect("error")
    assert error["code"] == "not_joined" and error["ref"] == "abc"


# --- malformed frames ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "bad_json"),
        ("[1, 2]", "bad_frame"),
        ('"text"', "bad_frame"),
        ('{"no": "type"}', "bad_frame"),
        ('{"type": "shout"}', "unknown_type"),
        ('{"type": "send", "connection_id": "x"}', "bad_frame"),
        ('{"type": "join", "connection_id": 5}', "bad_frame"),
        (
            '{"type": "history", "connection_id": "01M8BPJBQT841DKEDQYC4XZ3AJ", "limit": 0}',
            "bad_frame",
        ),
        ("[" * 5000 + "]" * 5000, "bad_json"),  # deeper than the decoder recurses
        ('{"type": "ping", "n": ' + "9" * 5000 + "}", "bad_json"),  # past int digit limit
    ],
)
async def test_malformed_frames_get_an_error_and_the_socket_stays_usable(world, connect, raw, code):
    client = await connect(factories.token_for(world.acme))
    await client.send(raw)
    assert (await client.expect("error"))["code"] == code
    await client.send({"type": "ping"})
    assert (await client.recv())["type"] == "pong"


async def test_body_limits(world, connect, settings):
    settings.CHAT_MAX_BODY_CHARS = 10
    room = world.room.connection_id
    client = await connect(factories.token_for(world.acme), room=room)
    await client.send(send_frame(room, client_id="long", body="x" * 11))
    error = await client.expect("error")
    assert error == {
        "type": "error",
        "code": "body_too_long",
        "message": "body exceeds 10 characters",
        "ref": "long",
    }
    for invisible in ("   ", "\u200b\u200d\u2060", "\ufeff \u3164", "\u2800\n\t"):
        await client.send(send_frame(room, client_id="blank", body=invisible))
        assert (await client.expect("error"))["code"] == "bad_frame"
    await client.send(send_frame(room, client_id="c" * 65))
    assert (await client.expect("error"))["code"] == "bad_frame"


@pytest.mark.parametrize(
    "body",  # JSON escapes, as a client would send them
    [r"lone \ud800 surrogate", r"bell \u0007", r"nul \u0000", r"not a character \ufffe"],
    ids=["surrogate", "bell", "nul", "noncharacter"],
)
async def test_bodies_a_store_would_refuse_are_bad_frames_and_never_queued(world, connect, body):
    room = world.room.connection_id
    client = await connect(factories.token_for(world.acme), room=room)
    await client.send(
        f'{{"type": "send", "connection_id": "{room}", "client_id": "c1", "body": "{body}"}}'
    )
    error = await client.expect("error")
    assert error["code"] == "bad_frame" and error["ref"] == "c1"
    await client.send(send_frame(room, client_id="c2", body="fine"))
    assert (await client.expect("ack", skip=("message", "presence")))["client_id"] == "c2"
    assert [m["body"] for m in queued_bodies(world.aws)] == ["fine"]


async def test_unauthenticated_sockets_get_one_error_then_4401(world, connect, caplog):
    """A socket that has not authenticated cannot make the server log or work twice."""
    for first in ("[" * 5000, '{"type": "ping"}', b"\x00\x01"):
        client = await connect()
        if isinstance(first, bytes):
            await client.comm.send_to(bytes_data=first)
        else:
            await client.send(first)
        assert (await client.recv())["type"] == "error"
        assert await client.recv() == {"type": "__closed__", "code": 4401}
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_binary_frames_are_rejected(world, connect):
    client = await connect(factories.token_for(world.acme))
    await client.comm.send_to(bytes_data=b"\x00\x01")
    assert (await client.expect("error"))["code"] == "bad_frame"


async def test_frame_above_the_tenant_limit_closes_1009(world, connect):
    await set_limits(world.acme.tenant, max_frame_bytes=1024)
    client = await connect(factories.token_for(world.acme), room=world.room.connection_id)
    await client.send(send_frame(world.room.connection_id, body="x" * 2000))
    await client.expect_closed(1009)


async def test_frame_above_the_global_limit_closes_1009_before_auth(world, connect, settings):
    settings.CHAT_MAX_FRAME_BYTES = 4096
    client = await connect()
    await client.send({"type": "auth", "token": "x" * 5000})
    await client.expect_closed(1009)


# --- floods and failures -------------------------------------------------------------


async def test_flood_gets_errors_then_close_4429_and_spares_others(world, connect, settings):
    settings.CHAT_CONTROL_FRAMES_PER_SECOND = 1
    settings.CHAT_CONTROL_BURST = 5
    room = world.room.connection_id
    flooder = await connect(factories.token_for(world.acme, user_id="f"), room=room)
    calm = await connect(factories.token_for(world.acme, user_id="c"), room=room)
    for _ in range(40):
        await flooder.send({"type": "ping"})
    frames = []
    while (frame := await flooder.recv())["type"] != "__closed__":
        frames.append(frame)
    assert frame["code"] == 4429
    assert [f["type"] for f in frames].count("pong") == 4  # burst of 5, one spent on join
    assert {f["code"] for f in frames if f["type"] == "error"} == {"rate_limited"}
    assert frames[-1]["message"] == "too many control frames: at most 1/s, burst 5; slow down"
    assert {f["ref"] for f in frames if f["type"] == "error"} == {None}  # pings name nothing

    await calm.send(send_frame(room, client_id="ok"))
    assert (await calm.expect("ack", skip=("message", "presence")))["client_id"] == "ok"


async def test_a_rate_limited_send_names_its_client_id(world, connect):
    await set_limits(world.acme.tenant, messages_per_second=1)
    room = world.room.connection_id
    client = await connect(factories.token_for(world.acme), room=room)
    for n in range(6):
        await client.send(send_frame(room, client_id=f"s{n}"))
    error = await client.expect("error", skip=("message", "ack"))
    assert error["code"] == "rate_limited" and error["ref"] == "s5"  # burst 5; joins do not count
    assert error["message"] == (
        "too many messages (send, typing, edit, delete, react, moderate, upload): "
        "at most 1/s, burst 5; slow down"
    )


async def test_sqs_failure_names_the_client_id_and_keeps_the_socket(world, connect, settings):
    settings.CHAT_QUEUE_URL = world.aws.queue_url + "-missing"
    settings.CHAT_SQS_MAX_ATTEMPTS = 2
    room = world.room.connection_id
    client = await connect(factories.token_for(world.acme), room=room)
    await client.send(send_frame(room, client_id="lost?"))
    error = await client.expect("error", skip=("message",), timeout=10)
    assert error["code"] == "not_stored" and error["ref"] == "lost?"

    # The client resends the same client_id once SQS is back: same message, acked.
    settings.CHAT_QUEUE_URL = world.aws.queue_url
    await client.send(send_frame(room, client_id="lost?"))
    ack = await client.expect("ack", timeout=5, skip=("message",))
    [queued] = queued_bodies(world.aws)
    assert queued["id"] == ack["id"]
