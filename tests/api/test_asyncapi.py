"""/api/v1/asyncapi.json: the WebSocket protocol, machine-readable.

Valid against the official AsyncAPI 3.0.0 JSON Schema (vendored: schemas/README.md),
and it cannot drift: it names every frame type, error code, close code and
`left` reason the server's code uses (the realtime package, and the modules
whose refusals become `error` frames: content changes, moderation,
attachments), and the frames a real conversation produces validate against
its payload schemas.
"""

import ast
import json
import re
from pathlib import Path

import jsonschema
import pytest

from chatsvc.core.ulid import new_ulid
from chatsvc.realtime import protocol
from chatsvc.rooms.moderation import PAST
from chatsvc.rooms.services import close_room
from chatsvc.settings import BASE_DIR
from tests import factories
from tests.attachments.conftest import PNG, post_upload
from tests.realtime.conftest import Client, async_db

SCHEMA = Path(__file__).parent / "schemas" / "asyncapi-3.0.0.json"
REALTIME = BASE_DIR / "chatsvc" / "realtime"
SOURCES = sorted(REALTIME.glob("*.py"))
# Modules whose refusals the consumer turns into `error` frames with their code
# (ContentError, AttachmentError), and whose content events it sends to the room.
CHANGES = [
    BASE_DIR / "chatsvc" / "messaging" / "content.py",
    BASE_DIR / "chatsvc" / "rooms" / "moderation.py",
    BASE_DIR / "chatsvc" / "attachments" / "services.py",
]
ERRORS = {"FrameError", "ContentError", "AttachmentError"}
# Calls whose first argument is the `type` of a content event the room receives.
EVENT_MAKERS = {"_change", "event_head"}


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


def source_trees(paths=SOURCES) -> list[ast.Module]:
    return [ast.parse(path.read_text()) for path in paths]


def called(node) -> str | None:
    """The name a call calls: `f(...)` and `module.f(...)` -> "f"."""
    func = node.func
    return getattr(func, "id", None) or getattr(func, "attr", None)


def literals(node) -> set[str]:
    """Every string constant in an expression (`"a" if x else "b"` -> {"a", "b"})."""
    return {
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def frame_types_sent() -> set[str]:
    """Literal `{"type": ...}` dicts of the realtime code, less channel-layer events
    ("chat.frame", "room.closed"): those travel between processes, never to clients."""
    found = set()
    for tree in source_trees([*SOURCES, *CHANGES]):
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    if isinstance(key, ast.Constant) and key.value == "type":
                        found |= {kind for kind in literals(value) if "." not in kind}
            elif isinstance(node, ast.Call) and called(node) in EVENT_MAKERS and node.args:
                # content events are pre-encoded too: event_head("reaction", ...)
                found |= literals(node.args[0])
    encoded = (BASE_DIR / "chatsvc" / "messaging" / "queue_message.py").read_text()
    found |= set(re.findall(r"""'\{"type":"([a-z_]+)",""", encoded))  # the pre-encoded `message`
    return found


def error_codes_raised() -> set[str]:
    """The first argument of every FrameError(...) in the realtime code, and of every
    ContentError(...) and AttachmentError(...) of the modules the consumer calls (it
    sends their `code` as the error frame's)."""
    found = set()
    for tree in source_trees([*SOURCES, *CHANGES]):
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and called(node) in ERRORS and node.args:
                found |= literals(node.args[0])
    return found


def test_the_scans_see_the_new_modules():
    """The scans would miss codes if these modules moved or their errors were renamed."""
    assert all(path.exists() for path in CHANGES)
    raised = error_codes_raised()
    assert {"message_not_found", "edit_window_passed", "busy", "muted"} <= raised
    assert {"attachment_in_use", "attachment_not_uploaded", "too_many_uploads"} <= raised
    sent = frame_types_sent()
    assert {"message_edited", "message_deleted", "reaction", "moderation", "upload"} <= sent


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
    ack = {"$ref": "#/channels/socket/messages/server.ack"}
    for kind in protocol.ACKED_TYPES:  # every acknowledged frame is answered by `ack`
        assert ack in operations[f"receive{kind.capitalize()}"]["reply"]["messages"], kind
    assert {"$ref": "#/channels/socket/messages/server.upload"} in operations["receiveUpload"][
        "reply"
    ]["messages"]


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


def test_send_body_may_be_empty_only_with_attachments(document):
    send = validator_for(document, "client", "send")
    frame = {"type": "send", "connection_id": new_ulid(), "client_id": "c", "body": ""}
    assert not send.is_valid(frame)
    assert send.is_valid({**frame, "attachments": [new_ulid()]})
    assert not send.is_valid({**frame, "attachments": []})
    too_many = [new_ulid() for _ in range(protocol.MAX_ATTACHMENTS + 1)]
    assert not send.is_valid({**frame, "body": "hi", "attachments": too_many})


def test_moderate_takes_seconds_as_the_server_does(document):
    moderate = validator_for(document, "client", "moderate")
    payload = document["components"]["messages"]["client.moderate"]["payload"]
    assert payload["properties"]["action"]["enum"] == list(protocol.ACTIONS)
    frame = {"type": "moderate", "connection_id": new_ulid(), "client_id": "m", "user_id": "u"}
    assert moderate.is_valid({**frame, "action": "mute", "seconds": 60})
    assert not moderate.is_valid({**frame, "action": "mute"})  # mute needs seconds
    assert moderate.is_valid({**frame, "action": "ban"})
    assert moderate.is_valid({**frame, "action": "ban", "seconds": protocol.MAX_SECONDS})
    assert not moderate.is_valid({**frame, "action": "ban", "seconds": protocol.MAX_SECONDS + 1})
    assert moderate.is_valid({**frame, "action": "kick"})
    assert not moderate.is_valid({**frame, "action": "kick", "seconds": 9})
    assert not moderate.is_valid({**frame, "action": "nuke"})
    event = document["components"]["messages"]["server.moderation"]["payload"]
    assert set(event["properties"]["action"]["enum"]) == set(PAST.values())


def test_history_entries_are_messages_or_tombstones(document):
    history = validator_for(document, "server", "history")
    entry = {
        "connection_id": new_ulid(),
        "id": new_ulid(),
        "seq": 3,
        "sender": {"id": "u1", "name": "Ada"},
        "body": "hi",
        "ts": "2026-11-26T10:00:01.123Z",
    }
    tombstone = {k: v for k, v in entry.items() if k != "body"}
    tombstone |= {"deleted": True, "deleted_at": entry["ts"], "deleted_by": None}

    def page(*messages):
        return {
            "type": "history",
            "connection_id": entry["connection_id"],
            "messages": list(messages),
            "next": None,
        }

    assert history.is_valid(page(entry, tombstone))
    assert not history.is_valid(page({**tombstone, "body": "still here"}))
    assert not history.is_valid(page({**tombstone, "reactions": []}))
    assert not history.is_valid(page({k: v for k, v in entry.items() if k != "body"}))


@pytest.mark.django_db(transaction=True)
async def test_content_events_and_attachments_match_the_document(document, aws, bucket):
    """Every new frame, as the server really sends it: edits, reactions, deletions,
    moderation, uploads, messages with attachments, history with all of them, errors."""
    acme = await async_db(factories.tenant_with_key)("acme", messages_per_second=50)
    room = await async_db(factories.room_for)(acme)
    cid = room.connection_id
    received = {}  # client -> its frames

    async def until(client, *kinds, since=0):
        """Read frames until each of `kinds` has come (counting those the client got
        from index `since` on); the last frame read."""
        frames = received.setdefault(client, [])
        waiting = set(kinds) - {frame["type"] for frame in frames[since:]}
        frame = None
        while waiting:
            frame = await client.recv()
            frames.append(frame)
            waiting.discard(frame["type"])
        return frame

    ada = await Client().open()
    tutor = await Client().open()
    try:
        for client, user, role in ((ada, "ada", "member"), (tutor, "tutor", "moderator")):
            token = factories.token_for(acme, user_id=user, name=user.title(), role=role)
            await client.send({"type": "auth", "token": token})
            await client.send({"type": "join", "connection_id": cid})
            await until(client, "ready", "joined")

        await ada.send(
            {
                "type": "upload",
                "connection_id": cid,
                "client_id": "u1",
                "name": "pic.png",
                "content_type": "image/png",
                "size": len(PNG),
            }
        )
        grant = await until(ada, "upload")
        assert post_upload(grant, PNG, filename="pic.png").status_code in (200, 201, 204)
        ids = []
        for send in (
            {"client_id": "m1", "body": "", "attachments": [grant["id"]]},
            {"client_id": "m2", "body": "helo"},
            {"client_id": "m3", "body": "oops"},
            {"client_id": "m4", "body": "spam"},
        ):
            mark = len(received[ada])
            await ada.send({"type": "send", "connection_id": cid, **send})
            ids.append((await until(ada, "ack", since=mark))["id"])
        with_file, typo, oops, spam = ids
        for frame in (
            {"type": "edit", "client_id": "e1", "message_id": typo, "body": "hello"},
            {"type": "react", "client_id": "r1", "message_id": typo, "emoji": "\N{THUMBS UP SIGN}"},
            {"type": "delete", "client_id": "d1", "message_id": oops},
        ):
            mark = len(received[ada])
            await ada.send({"connection_id": cid, **frame})
            await until(ada, "ack", since=mark)
        for frame in (
            {"type": "delete", "client_id": "d2", "message_id": spam},
            {
                "type": "moderate",
                "client_id": "x1",
                "action": "mute",
                "user_id": "ada",
                "seconds": 60,
                "reason": "calm down",
            },
        ):
            mark = len(received[tutor])
            await tutor.send({"connection_id": cid, **frame})
            await until(tutor, "ack", since=mark)
        await until(ada, "message_edited", "reaction", "message_deleted", "moderation")
        for frame in (
            {"type": "edit", "client_id": "e2", "message_id": typo, "body": "x"},  # muted
            {"type": "moderate", "client_id": "x2", "action": "kick", "user_id": "tutor"},
        ):
            mark = len(received[ada])
            await ada.send({"connection_id": cid, **frame})
            await until(ada, "error", since=mark)
        await tutor.send({"type": "history", "connection_id": cid})
        history = await until(tutor, "history")
    finally:
        await ada.close()
        await tutor.close()

    frames = received[ada] + received[tutor]
    kinds = {frame["type"] for frame in frames}
    assert kinds >= {
        "upload",
        "message",
        "ack",
        "message_edited",
        "reaction",
        "message_deleted",
        "moderation",
        "error",
        "history",
    }, kinds
    assert any(frame.get("attachments") for frame in frames if frame["type"] == "message")
    errors = [frame["code"] for frame in frames if frame["type"] == "error"]
    assert errors == ["muted", "forbidden"], frames
    shown = {message["id"]: message for message in history["messages"]}
    assert shown[oops]["deleted"] is True and shown[spam]["deleted_by"]["id"] == "tutor"
    assert shown[typo]["edited_at"] and shown[typo]["reactions"]
    assert shown[with_file]["body"] == "" and shown[with_file]["attachments"]
    for frame in frames:
        errors = [
            e.message for e in validator_for(document, "server", frame["type"]).iter_errors(frame)
        ]
        assert not errors, (frame, errors)
