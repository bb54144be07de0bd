"""/api/v1/asyncapi.json: the WebSocket protocol, machine-readable.

Valid against the official AsyncAPI 3.0.0 JSON Schema (vendored: schemas/README.md),
and it cannot drift: it names every frame type, error code, close code and
`left` reason the server's code uses, and the frames a real conversation
produces validate against its payload schemas.
"""

import ast
import json
import re
from pathlib import Path

import jsonschema
import pytest

from chatsvc.core.ulid import new_ulid
from chatsvc.realtime import protocol
from chatsvc.rooms.services import close_room
from chatsvc.settings import BASE_DIR
from tests import factories
from tests.realtime.conftest import Client, async_db

SCHEMA = Path(__file__).parent / "schemas" / "asyncapi-3.0.0.json"
REALTIME = BASE_DIR / "chatsvc" / "realtime"
SOURCES = sorted(REALTIME.glob("*.py"))


@pytest.fixture(scope="module")
def document():
    from django.test import Client as HttpClient

    response = HttpClient().get("/api/v1/asyncapi.json")  # no API key needed
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    return response.json()


def messages_of(document, side: str) -> dict:
    """type -> message object, for the frames one side sends."""
    found = {}
    for key, message in document["components"]["messages"].items():
        if key.startswith(f"{side}."):
            found[message["payload"]["properties"]["type"]["const"]] = message
    return found


def source_trees() -> list[ast.Module]:
    return [ast.parse(path.read_text()) for path in SOURCES]


def literals(node) -> set[str]:
    """Every string constant in an expression (`"a" if x else "b"` -> {"a", "b"})."""
    return {
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def frame_types_sent() -> set[str]:
    """Literal `{"type": ...}` dicts of the realtime code, less channel-layer events
    ("chat.frame", "room.closed"): those travel between processes, never to clients."""
    found = set()
    for tree in source_trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "type":
                        found |= {kind for kind in literals(value) if "." not in kind}
    encoded = (BASE_DIR / "chatsvc" / "messaging" / "queue_message.py").read_text()
    found |= set(re.findall(r"""'\{"type":"([a-z_]+)",""", encoded))  # the pre-encoded `message`
    return found


def error_codes_raised() -> set[str]:
    """The first argument of every FrameError(...) in the realtime code."""
    found = set()
    for tree in source_trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "FrameError":
                found |= literals(node.args[0])
    return found


def validator_for(document, side: str, kind: str) -> jsonschema.Draft7Validator:
    """The frame's payload schema, its $refs resolved inside the document."""
    schema = {"$ref": f"#/components/messages/{side}.{kind}/payload", **document}
    return jsonschema.Draft7Validator(schema)


def test_the_document_is_valid_asyncapi_3(document):
    official = json.loads(SCHEMA.read_text())
    errors = sorted(jsonschema.Draft7Validator(official).iter_errors(document), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors[:5]]
    assert document["asyncapi"] == "3.0.0"
    assert document["channels"]["socket"]["address"] == "/ws/v1/"


def test_every_reference_resolves(document):
    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref":
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    for ref in walk(document):
        target = document
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]  # a KeyError names the broken $ref


def test_it_names_every_client_frame_the_server_parses(document):
    assert set(messages_of(document, "client")) == set(protocol.FIELDS)
    for kind, fields in protocol.FIELDS.items():
        payload = messages_of(document, "client")[kind]["payload"]
        assert set(fields) <= set(payload["properties"]), kind


def test_it_names_every_frame_the_server_sends(document):
    sent = frame_types_sent()
    assert {"ready", "joined", "left", "message", "ack", "error", "pong"} <= sent
    assert sent <= set(messages_of(document, "server")), sent - set(messages_of(document, "server"))


def test_it_names_every_error_code_close_code_and_left_reason(document):
    code = "\n".join(path.read_text() for path in SOURCES)
    raised = error_codes_raised()
    error = messages_of(document, "server")["error"]["payload"]["properties"]["code"]
    assert raised == {choice["const"] for choice in error["oneOf"]}

    close_codes = {int(c) for c in re.findall(r"^CLOSE_[A-Z_]+ = (\d+)", code, re.M)}
    documented = {entry["code"] for entry in document["channels"]["socket"]["x-close-codes"]}
    assert close_codes == documented

    reasons = set(re.findall(r'"reason":\s*"([a-z_]+)"', code))
    left = messages_of(document, "server")["left"]["payload"]["properties"]["reason"]
    assert reasons <= set(left["enum"])


def test_it_agrees_with_the_prose_protocol(document):
    """docs/protocol.md's error and close code tables name the same codes."""
    prose = (BASE_DIR / "docs" / "protocol.md").read_text()
    errors_table = prose.split("## Errors", 1)[1].split("\n## ", 1)[0]
    closes_table = prose.split("## Close codes", 1)[1].split("\n## ", 1)[0]
    error = messages_of(document, "server")["error"]["payload"]["properties"]["code"]
    documented = {choice["const"] for choice in error["oneOf"]}
    assert set(re.findall(r"^\| `([a-z_]+)` \|", errors_table, re.M)) <= documented
    closes = {entry["code"] for entry in document["channels"]["socket"]["x-close-codes"]}
    assert {int(c) for c in re.findall(r"^\| (\d{4}) \|", closes_table, re.M)} == closes


def test_every_example_matches_its_schema(document):
    for side in ("client", "server"):
        for kind, message in messages_of(document, side).items():
            validator = validator_for(document, side, kind)
            for example in message["examples"]:
                errors = [e.message for e in validator.iter_errors(example["payload"])]
                assert not errors, (side, kind, errors)


def test_operations_cover_both_directions(document):
    operations = document["operations"]
    received = {
        op["messages"][0]["$ref"].rsplit(".", 1)[1]
        for op in operations.values()
        if op["action"] == "receive"
    }
    sent = {
        op["messages"][0]["$ref"].rsplit(".", 1)[1]
        for op in operations.values()
        if op["action"] == "send"
    }
    assert received == set(messages_of(document, "client"))
    assert sent == set(messages_of(document, "server"))
    assert operations["receivePing"]["reply"]["messages"] == [
        {"$ref": "#/channels/socket/messages/server.pong"}
    ]


@pytest.mark.django_db(transaction=True)
async def test_a_real_conversation_matches_the_document(document, aws):
    acme = await async_db(factories.tenant_with_key)("acme", messages_per_second=50)
    room = await async_db(factories.room_for)(acme)
    cid = room.connection_id
    received = []

    async def until(client, *kinds):
        """Read frames (keeping each) until every one of `kinds` has come."""
        waiting = set(kinds)
        while waiting:
            frame = await client.recv()
            received.append(frame)
            waiting.discard(frame["type"])

    ada, bob = await Client().open(), await Client().open()
    try:
        for client, user in ((ada, "ada"), (bob, "bob")):
            await client.send({"type": "auth", "token": factories.token_for(acme, user_id=user)})
            await client.send({"type": "join", "connection_id": cid})
            await until(client, "ready", "joined")
        await until(ada, "presence")  # bob joined
        for frame in (
            {"type": "send", "connection_id": cid, "client_id": "c1", "body": "hi"},
            {"type": "typing", "connection_id": cid},
            {"type": "history", "connection_id": cid},
            {"type": "ping"},
            {"type": "leave", "connection_id": new_ulid()},  # not joined: an error
        ):
            await ada.send(frame)
        await until(ada, "message", "ack", "history", "pong", "error")
        await until(bob, "message", "typing")
        await async_db(close_room)(room=room)
        await until(bob, "left")  # reason: closed
    finally:
        await ada.close()
        await bob.close()

    kinds = [frame["type"] for frame in received]
    assert set(kinds) >= {
        "ready",
        "joined",
        "presence",
        "message",
        "ack",
        "typing",
        "history",
        "pong",
        "error",
        "left",
    }, kinds
    for frame in received:
        errors = [
            e.message for e in validator_for(document, "server", frame["type"]).iter_errors(frame)
        ]
        assert not errors, (frame, errors)


def test_join_names_one_room_or_several(document):
    join = validator_for(document, "client", "join")
    one, two = new_ulid(), new_ulid()
    assert join.is_valid({"type": "join", "connection_id": one, "since": 3, "epoch": "e"})
    assert join.is_valid(
        {"type": "join", "connection_ids": [one, two], "since": {one: 3}, "epoch": {one: "e"}}
    )
    assert not join.is_valid({"type": "join"})
    assert not join.is_valid({"type": "join", "connection_id": one, "connection_ids": [two]})
