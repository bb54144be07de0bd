"""Every auth failure says which check failed: an `error` frame, the close reason, one log line.

Through the real ASGI app (WebsocketCommunicator) with real tokens; the close
reason is what the server hands to the WebSocket server (`websocket.close`).
"""

import logging
import re
import time

import jwt
import pytest

from chatsvc.realtime.consumer import close_reason
from chatsvc.tenants.services import revoke_key, set_active
from tests import factories
from tests.realtime.conftest import async_db

pytestmark = pytest.mark.django_db(transaction=True)

LOGGER = "chatsvc.realtime.consumer"


def claims(**changes):
    now = int(time.time())
    payload = {"sub": "u", "cids": ["*"], "iat": now, "exp": now + 600, **changes}
    return {name: value for name, value in payload.items() if value is not None}


def signed(issued, payload=None, *, secret=None, headers=None, algorithm="HS256"):
    return jwt.encode(
        payload if payload is not None else claims(),
        secret or issued.signing_secret,
        algorithm=algorithm,
        headers={"kid": issued.key.key_id} if headers is None else headers,
    )


async def rejected(client, frame):
    """Send `frame` as the first frame: the error frame, then the close (code, reason)."""
    await client.send(frame)
    error = await client.recv()
    output = await client.comm.receive_output(3)
    assert output["type"] == "websocket.close", output
    return error, output["code"], output.get("reason")


def auth(token):
    return {"type": "auth", "token": token}


NOW_NUMBERS = r"\(exp \d+, server time \d+, 30 s grace\)"

# (case id, token builder, error code, message (regex), log check)
CASES = [
    (
        "bad-signature",
        lambda w: signed(w.acme, secret="not-the-secret-but-long-enough-for-hs256-keys"),
        "bad_token",
        r"bad signature: not signed with this kid's signing secret",
        "bad_signature",
    ),
    (
        "unknown-kid",
        lambda w: signed(w.acme, headers={"kid": "k-nope"}),
        "bad_token",
        r"unknown kid",
        "unknown_kid",
    ),
    (
        "no-kid",
        lambda w: signed(w.acme, headers={}),
        "bad_token",
        r"token has no kid header \(the tenant key id\)",
        "no_kid",
    ),
    (
        "alg-hs512",
        lambda w: signed(w.acme, algorithm="HS512"),
        "bad_token",
        r"token alg must be HS256 \(got 'HS512'\)",
        "alg",
    ),
    (
        "expired",
        lambda w: signed(w.acme, claims(iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
        "bad_token",
        r"token expired 1 h 0 min ago " + NOW_NUMBERS,
        "expired",
    ),
    (
        "expired-just-past-grace",
        lambda w: signed(w.acme, claims(exp=int(time.time()) - 45)),
        "bad_token",
        r"token expired 4\d s ago " + NOW_NUMBERS,
        "expired",
    ),
    (
        "nbf-in-the-future",
        lambda w: signed(w.acme, claims(nbf=int(time.time()) + 600)),
        "bad_token",
        r"token not yet valid: nbf is (10 min 0|9 min 59) s ahead of the server clock "
        r"\(\d+, 30 s grace\)",
        "not_yet_valid",
    ),
    (
        "iat-in-the-future",
        lambda w: signed(w.acme, claims(iat=int(time.time()) + 120, exp=int(time.time()) + 900)),
        "bad_token",
        r"token not yet valid: iat is (2 min 0|1 min 59) s ahead of the server clock .*",
        "not_yet_valid",
    ),
    (
        "missing-exp",
        lambda w: signed(w.acme, claims(exp=None)),
        "bad_token",
        r"missing claim 'exp'",
        "missing_claim",
    ),
    (
        "missing-sub",
        lambda w: signed(w.acme, claims(sub=None)),
        "bad_token",
        r"missing claim 'sub'",
        "missing_claim",
    ),
    (
        "exp-not-an-integer",
        lambda w: signed(w.acme, claims(exp="tomorrow")),
        "bad_token",
        r"claim 'exp' must be an integer \(epoch seconds\)",
        "bad_claim",
    ),
    (
        "lifetime-over-24h",
        lambda w: signed(w.acme, claims(exp=int(time.time()) + 2 * 86400)),
        "bad_token",
        r"token lifetime \(exp - iat\) exceeds 24 hours",
        "lifetime",
    ),
    (
        "audience",
        lambda w: signed(w.acme, claims(aud="some-other-service")),
        "bad_token",
        r"claim 'aud' is not accepted: leave it out",
        "audience",
    ),
    (
        "bad-role",
        lambda w: signed(w.acme, claims(role="admin")),
        "bad_token",
        r"role must be member or moderator",
        "bad_claim",
    ),
    (
        "malformed",
        lambda w: "not.a.jwt",
        "bad_token",
        r"malformed token: not a JWT \(header\.payload\.signature, base64url\)",
        "malformed",
    ),
    ("empty", lambda w: "", "bad_token", r"auth needs a token \(a JWT string\)", "missing"),
    ("not-a-string", lambda w: 42, "bad_frame", r"'token' must be a string", "first_frame"),
]


@pytest.mark.parametrize(
    ("make_token", "code", "message", "check"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
async def test_each_failed_check_is_named_in_the_error_the_close_reason_and_one_log_line(
    world, connect, caplog, make_token, code, message, check
):
    caplog.set_level(logging.INFO, logger=LOGGER)
    token = make_token(world)
    client = await connect()

    error, close_code, reason = await rejected(client, auth(token))

    assert error["type"] == "error" and error["code"] == code and error["ref"] is None
    assert re.fullmatch(message, error["message"]), error["message"]
    assert close_code == 4401
    assert reason == error["message"] and len(reason.encode()) <= 123
    [line] = [r for r in caplog.records if r.name == LOGGER and r.msg == "websocket auth rejected"]
    assert line.check == check and line.close_code == 4401 and line.error_code == code
    if check not in ("no_kid", "alg", "malformed", "missing", "first_frame"):
        assert line.kid in (world.acme.key.key_id, "k-nope")
    if isinstance(token, str) and token:
        # No token contents in the log: neither the token nor its signature.
        assert token not in caplog.text and token.rsplit(".", 1)[-1] not in caplog.text


async def test_a_token_within_the_30_second_grace_is_accepted(world, connect):
    client = await connect()
    token = signed(world.acme, claims(exp=int(time.time()) - 10))
    assert (await client.auth(token))["type"] == "ready"


async def test_revoked_key_and_disabled_tenant_say_so(world, connect):
    token = factories.token_for(world.acme)
    await async_db(revoke_key)(key=world.acme.key)
    error, code, reason = await rejected(await connect(), auth(token))
    assert (error["code"], code) == ("bad_token", 4401)
    assert error["message"] == reason == "revoked key: mint with the current key"

    other = factories.token_for(world.other)
    await async_db(set_active)(tenant=world.other.tenant, active=False)
    error, code, reason = await rejected(await connect(), auth(other))
    assert (error["code"], code, error["message"], reason) == (
        "forbidden",
        4403,
        "tenant disabled",
        "tenant disabled",
    )


async def test_another_tenants_kid_tells_nothing_about_that_tenant(world, connect):
    """A kid of tenant B with tenant A's secret is a bad signature; B's key being revoked
    or B being disabled is only told to someone who holds B's signing secret."""
    forged = signed(world.acme, headers={"kid": world.other.key.key_id})
    error, code, _ = await rejected(await connect(), auth(forged))
    assert (error["message"], code) == (
        "bad signature: not signed with this kid's signing secret",
        4401,
    )

    await async_db(set_active)(tenant=world.other.tenant, active=False)
    await async_db(revoke_key)(key=world.other.key)
    error, code, _ = await rejected(await connect(), auth(forged))
    assert (error["message"], code) == (
        "bad signature: not signed with this kid's signing secret",
        4401,
    )
    for name in (world.other.tenant.slug, world.other.tenant.name, world.other.tenant.id):
        assert str(name) not in error["message"]


async def test_first_frame_problems_are_named(world, connect, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    error, code, reason = await rejected(await connect(), {"type": "ping"})
    assert (error["code"], error["message"], code, reason) == (
        "not_authenticated",
        "the first frame must be auth, not 'ping'",
        4401,
        "the first frame must be auth, not 'ping'",
    )
    error, code, reason = await rejected(await connect(), "{nope")
    assert error["code"] == "bad_json" and code == 4401 and reason == error["message"]
    error, code, reason = await rejected(await connect(), {"no": "type"})
    assert error["message"] == reason == "the first frame must be auth"
    checks = [r.check for r in caplog.records if r.msg == "websocket auth rejected"]
    assert checks == ["first_frame"] * 3


async def test_origin_not_allowed_is_named(transactional_db, aws, connect):
    issued = await async_db(factories.tenant_with_key)("lms", origins=["https://lms.example.edu"])
    client = await connect(origin="https://evil.example.com")
    error, code, reason = await rejected(client, auth(factories.token_for(issued)))
    assert (error["code"], code) == ("forbidden", 4403)
    assert error["message"] == reason
    assert reason == "origin 'https://evil.example.com' is not allowed for this tenant"


async def test_pages_chatsvc_serves_itself_pass_a_tenants_origin_list(transactional_db, aws):
    """The LTI chat page runs on chatsvc's own origin inside the LMS's iframe."""
    from tests.realtime.conftest import Client

    issued = await async_db(factories.tenant_with_key)("lms", origins=["https://lms.example.edu"])
    client = await Client(origin="http://127.0.0.1:8000", host="127.0.0.1:8000").open()
    await client.send(auth(factories.token_for(issued)))
    assert (await client.recv())["type"] == "ready"
    await client.comm.disconnect()
    other = await Client(origin="http://127.0.0.1:8000.evil.com", host="127.0.0.1:8000").open()
    error, code, _ = await rejected(other, auth(factories.token_for(issued)))
    assert (error["code"], code) == ("forbidden", 4403)


async def test_live_sockets_are_told_why_they_are_closed(world, connect):
    client = await connect(factories.token_for(world.acme))
    await async_db(revoke_key)(key=world.acme.key)
    output = await client.comm.receive_output(3)
    assert (output["code"], output["reason"]) == (4401, "key revoked")


def test_close_reasons_fit_a_close_frame():
    assert close_reason("x" * 200) == "x" * 123
    cut = close_reason("é" * 100)  # two bytes each: never half a character
    assert cut == "é" * 61 and len(cut.encode()) == 122
    assert close_reason("") is None and close_reason(None) is None
