"""WebSocket protocol v1 (docs/protocol.md) as an AsyncAPI 3.0 document,
served at /api/v1/asyncapi.json.

The document describes the server: frames it receives from clients are
`receive` operations, frames it sends are `send` operations. Every frame is
one message of the one channel, `/ws/v1/`; its payload's `type` is a
`const`. Error codes are the `oneOf` of the `error` frame's `code`; close
codes are listed in the channel's `x-close-codes`. Limits come from the same
constants and settings the server enforces. tests/api/test_asyncapi.py
validates it against the official AsyncAPI 3.0.0 JSON Schema and checks it
names every frame type, error code and close code the server uses.
"""

from django.conf import settings

from chatsvc.api.schemas import EXAMPLE_MESSAGE, EXAMPLE_ROOM
from chatsvc.core.ulid import ULID_RE
from chatsvc.realtime import consumer, protocol, tokens

CHANNEL = "#/channels/socket"
EXAMPLE_USER = {"id": "u7", "name": "Grace"}
ULID = {"type": "string", "pattern": ULID_RE.pattern, "minLength": 26, "maxLength": 26}
ROOM = {
    **ULID,
    "description": "A ConnectionId (room id).",
    "examples": ["01JD7X3K9Q4W6E2R8T5Y1V3N0P"],
}
MESSAGE_ID = {**ULID, "description": "A message id, assigned by the server; ids sort by arrival."}
SEQ = {"type": "integer", "minimum": 1, "description": "The message's place in its room."}
EPOCH = {
    "type": "string",
    "maxLength": protocol.MAX_EPOCH,
    "description": "Opaque: names the room's current sequence; changes only when the server "
    "lost its replay state.",
}
TS = {"type": "string", "format": "date-time", "description": "ISO 8601 UTC, milliseconds."}
USER = {"$ref": "#/components/schemas/user"}
MEMBER = {"$ref": "#/components/schemas/member"}

ERROR_CODES = {
    "bad_json": "The frame is not JSON, is nested too deeply, or holds a number too large "
    "to decode.",
    "bad_frame": "Not an object, no `type`, a field missing or of the wrong type, a value "
    "out of range, a binary frame; a blank `body`, or characters no store accepts.",
    "not_authenticated": "The first frame was not `auth`, or none came in time (then close "
    "4401 or 4408).",
    "bad_token": "The token was refused: `message` names the check (bad signature, unknown "
    "or revoked key, malformed, expired, the user's sessions revoked ...); close 4401 "
    "follows with the same reason. Fetch a fresh token, then reconnect.",
    "forbidden": "The tenant is disabled or the `Origin` is not allowed; close 4403 follows. Stop.",
    "unknown_type": "`type` is not a client frame type.",
    "already_authenticated": "A second `auth`.",
    "not_found": "No such room: also another tenant's room and one outside the token's "
    "`cids` (indistinguishable on purpose).",
    "room_closed": "The room is closed.",
    "removed": "The tenant removed this user from the room; joining fails until the tenant "
    "re-admits the user (a new token does not help). Stop trying.",
    "not_joined": "`send`/`leave`/`typing`/`history` for a room this socket is not in (never "
    "joined, left, removed, or the room was closed): worth one rejoin.",
    "too_many_rooms": "The socket is already in the most rooms it may join.",
    "too_many_sockets": "The user already holds the tenant's most sockets per user; "
    "close 4409 follows.",
    "body_too_long": "`body` over the length limit.",
    "rate_limited": "Over one of the socket's two rate limits (`message` says which: "
    "messages - `send`, `typing` - or control frames); the frame was dropped: resend later.",
    "not_stored": "SQS did not accept the message in time; members may have seen it: "
    "resend the same `client_id`.",
    "overloaded": "Refused at once, nothing was created: too many messages wait for SQS in "
    "this process. Resend later with backoff.",
    "unavailable": "A backend is briefly unreachable; nothing was created or changed: retry "
    "with backoff (a `send` with the same `client_id`).",
    "history_unavailable": "The history store could not be read: retry the `history` frame.",
    "internal": "An unexpected server error (a bug): resend.",
}

CLOSE_CODES = {
    consumer.CLOSE_TOO_LARGE: "A frame above the size limit (64 KiB before auth, then the "
    "tenant's `max_frame_bytes`).",
    consumer.CLOSE_RESTART: "The server is restarting (deploys): reconnect with backoff and "
    "resume with `since`.",
    consumer.CLOSE_TRY_LATER: "The server could not check the token right now: reconnect later.",
    tokens.CLOSE_BAD_TOKEN: "First frame not `auth`, bad signature, unknown or revoked key, "
    "malformed or expired token; also on a live socket when its token expires (30 s after "
    "`exp`), its key is revoked or the tenant revoked the user's sessions. Fetch a fresh "
    "token, then reconnect.",
    tokens.CLOSE_FORBIDDEN: "Tenant disabled, or `Origin` not allowed. Stop: do not reconnect.",
    consumer.CLOSE_NO_AUTH: "No `auth` frame in time (an `error not_authenticated` comes first).",
    consumer.CLOSE_TOO_MANY_SOCKETS: "The user already holds the tenant's most sockets per "
    "user: close another one or reconnect later.",
    consumer.CLOSE_FLOOD: "Flooding: 20 `rate_limited` rejections (of either limit) within "
    "10 s, or too many unauthenticated sockets from one address.",
}


def _object(properties: dict, required: tuple = ()) -> dict:
    return {"type": "object", "required": list(required), "properties": properties}


def _frame(kind: str, summary: str, description: str, fields: dict, required=(), example=None):
    payload = _object({"type": {"type": "string", "const": kind}, **fields}, ("type", *required))
    message = {
        "name": kind,
        "title": f"{kind} frame",
        "summary": summary,
        "description": description + " Ignore fields you do not know: v1 only grows.",
        "contentType": "application/json",
        "payload": payload,
    }
    message["examples"] = [{"name": kind, "payload": example or {"type": kind}}]
    return message


def _client_frames(max_body: int, max_rooms: int, auth_seconds: int) -> dict:
    since_map = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
    epoch_map = {"type": "object", "additionalProperties": EPOCH}
    room = {"connection_id": ROOM}
    max_join = getattr(protocol, "MAX_JOIN_ROOMS", None)
    join_fields = {
        "connection_id": ROOM,
        "since": {
            "description": "The last `seq` you have from the room (with `connection_id`), or "
            "a map connection_id -> seq (with `connection_ids`).",
            "oneOf": [{"type": "integer", "minimum": 0}, since_map],
        },
        "epoch": {
            "description": "The room's epoch you got `since` in (with `connection_id`), or a "
            "map connection_id -> epoch (with `connection_ids`).",
            "oneOf": [EPOCH, epoch_map],
        },
    }
    if max_join:
        join_fields["connection_ids"] = {
            "type": "array",
            "items": ROOM,
            "minItems": 1,
            "maxItems": max_join,
            "description": "Several rooms at once: each answered on its own (`joined` or "
            "an `error` naming its `connection_id`).",
        }
    frames = {
        "auth": _frame(
            "auth",
            "Authenticate the socket",
            f"Must be the first frame, within {auth_seconds} s. The token is a JWT (HS256) the "
            "tenant mints or gets from `POST /api/v1/tokens`. Answered by `ready`, or one "
            "`error` naming the failed check (`bad_token`, `forbidden`, ...) and a close with "
            "the same reason (4401, 4403).",
            {"token": {"type": "string", "description": "The user token (JWT)."}},
            ("token",),
            {"type": "auth", "token": "eyJhbGciOiJIUzI1NiIs..."},
        ),
        "join": _frame(
            "join",
            "Join one or several rooms",
            "Give `connection_id` (one room) or `connection_ids` (several, handled one after "
            "another as separate joins: each gets its own `joined`, or an `error` whose `ref` "
            "and `connection_id` name it), not both. With `since` and a matching `epoch` the "
            "missed messages come first (`message` frames in `seq` order), then `joined "
            "{recovered: true}`. The others get `presence {event: joined}` when this is the "
            f"user's first socket in the room. At most {max_rooms} rooms per socket.",
            join_fields,
            (),
            {"type": "join", "connection_id": EXAMPLE_ROOM, "since": 41, "epoch": "9f2c"},
        ),
        "leave": _frame(
            "leave",
            "Leave a room",
            "Answered by `left`; the others get `presence {event: left}`.",
            room,
            ("connection_id",),
            {"type": "leave", "connection_id": EXAMPLE_ROOM},
        ),
        "send": _frame(
            "send",
            "Post a message",
            "Every member (the sender too) gets `message`; then the sender gets `ack` once the "
            "message is durably queued. Resending the same `client_id` never creates a second "
            "message: it is answered with the original `id`, `seq` and `ts`.",
            {
                **room,
                "client_id": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": protocol.MAX_CLIENT_ID,
                    "description": "Chosen by the client; the idempotency key.",
                },
                "body": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": max_body,
                    "description": "Not blank or invisible only; no control characters except "
                    "tab and line breaks.",
                },
            },
            ("connection_id", "client_id", "body"),
            {
                "type": "send",
                "connection_id": EXAMPLE_ROOM,
                "client_id": "c-1",
                "body": "hi",
            },
        ),
        "typing": _frame(
            "typing",
            "Say the user is typing",
            "The other members get `typing` (at most one per 2 s per room per socket); it "
            "counts against the message rate limit, like `send`.",
            room,
            ("connection_id",),
            {"type": "typing", "connection_id": EXAMPLE_ROOM},
        ),
        "history": _frame(
            "history",
            "Read a room's history",
            "Answered by a `history` frame, newest first.",
            {
                **room,
                "before": {**MESSAGE_ID, "description": "A message id (exclusive)."},
                "limit": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": protocol.MAX_HISTORY_LIMIT,
                    "default": 50,
                },
            },
            ("connection_id",),
            {"type": "history", "connection_id": EXAMPLE_ROOM, "limit": 50},
        ),
        "ping": _frame("ping", "Check the connection", "Answered by `pong`.", {}),
    }
    if max_join:  # one room or several, never both
        frames["join"]["payload"]["oneOf"] = [
            {"required": ["connection_id"], "not": {"required": ["connection_ids"]}},
            {"required": ["connection_ids"], "not": {"required": ["connection_id"]}},
        ]
    else:
        frames["join"]["payload"]["required"].append("connection_id")
    return frames


def _server_frames() -> dict:
    message_fields = {
        "connection_id": ROOM,
        "id": MESSAGE_ID,
        "seq": SEQ,
        "sender": USER,
        "body": {"type": "string"},
        "ts": TS,
    }
    example_message = {
        "connection_id": EXAMPLE_ROOM,
        "id": EXAMPLE_MESSAGE,
        "seq": 42,
        "sender": EXAMPLE_USER,
        "body": "hi",
        "ts": "2026-11-26T10:00:01.123Z",
    }
    return {
        "ready": _frame(
            "ready",
            "Authenticated",
            "The answer to a good `auth`.",
            {
                "user": _object(
                    {
                        "id": {"type": "string"},
                        "name": {"type": "string"},
                        "role": {"type": "string", "enum": ["member", "moderator"]},
                    },
                    ("id", "name", "role"),
                )
            },
            ("user",),
            {"type": "ready", "user": {"id": "u7", "name": "Grace", "role": "member"}},
        ),
        "joined": _frame(
            "joined",
            "In the room",
            "Live messages of the room follow with no gap. A repeated `join` of a room the "
            "socket is in answers with the current `members`.",
            {
                "connection_id": ROOM,
                "seq": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "The room's last seq when the socket became live.",
                },
                "epoch": EPOCH,
                "recovered": {
                    "type": "boolean",
                    "description": "With `since` only: true when every missed message was "
                    "replayed before this frame; false: fill in with `history`.",
                },
                "members": {
                    "type": "array",
                    "items": MEMBER,
                    "maxItems": settings.CHAT_PRESENCE_LIST_MAX,
                    "description": "The room's users now, you included, each user once, first "
                    f"joined first, at most {settings.CHAT_PRESENCE_LIST_MAX}: a snapshot, "
                    "apply the `presence` frames that follow (keyed by `id`).",
                },
                "member_count": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "How many users are in the room (all of them).",
                },
            },
            ("connection_id", "seq", "epoch"),
            {
                "type": "joined",
                "connection_id": EXAMPLE_ROOM,
                "seq": 41,
                "epoch": "9f2c",
                "members": [{**EXAMPLE_USER, "role": "member"}],
                "member_count": 1,
            },
        ),
        "left": _frame(
            "left",
            "Out of the room",
            "The answer to `leave`, or the server took the socket out of the room.",
            {
                "connection_id": ROOM,
                "reason": {
                    "type": "string",
                    "description": "Absent after your own `leave`. `closed`: the room was "
                    "closed (do not rejoin). `resync`: the server could not repair the room's "
                    "stream for this socket (rejoin at once with `since`). `removed`: the "
                    "tenant removed this user from the room (do not rejoin: a `join` gets "
                    "`error removed` until the tenant re-admits the user).",
                    "enum": ["closed", "resync", "removed"],
                },
            },
            ("connection_id",),
            {"type": "left", "connection_id": EXAMPLE_ROOM, "reason": "closed"},
        ),
        "message": _frame(
            "message",
            "A chat message",
            "To every member, the sender included (normally before its `ack`). Display each "
            "`id` once, ordered by `seq`.",
            message_fields,
            tuple(message_fields),
            {"type": "message", **example_message},
        ),
        "ack": _frame(
            "ack",
            "The message is stored",
            "To the sender, once SQS accepted the message.",
            {
                "client_id": {"type": "string", "maxLength": protocol.MAX_CLIENT_ID},
                "id": MESSAGE_ID,
                "seq": SEQ,
                "ts": TS,
            },
            ("client_id", "id", "seq", "ts"),
            {
                "type": "ack",
                "client_id": "c-1",
                **{k: example_message[k] for k in ("id", "seq", "ts")},
            },
        ),
        "typing": _frame(
            "typing",
            "Someone is typing",
            "To the other members.",
            {"connection_id": ROOM, "user": USER},
            ("connection_id", "user"),
            {"type": "typing", "connection_id": EXAMPLE_ROOM, "user": EXAMPLE_USER},
        ),
        "presence": _frame(
            "presence",
            "Someone joined or left",
            "To the other members: `joined` when a user's first socket joined the room, `left` "
            "when their last socket left it, was removed or closed, or its server died.",
            {
                "connection_id": ROOM,
                "user": USER,
                "event": {"type": "string", "enum": ["joined", "left"]},
            },
            ("connection_id", "user", "event"),
            {
                "type": "presence",
                "connection_id": EXAMPLE_ROOM,
                "user": EXAMPLE_USER,
                "event": "joined",
            },
        ),
        "history": _frame(
            "history",
            "A page of history",
            "The answer to a `history` frame.",
            {
                "connection_id": ROOM,
                "messages": {
                    "type": "array",
                    "description": "Newest first, each shaped like `message` without `type`; "
                    "`seq` is absent on messages stored before rooms had sequences.",
                    "items": _object(
                        message_fields, ("connection_id", "id", "sender", "body", "ts")
                    ),
                },
                "next": {
                    "oneOf": [MESSAGE_ID, {"type": "null"}],
                    "description": "Pass as `before` for older messages; `null` at the end.",
                },
            },
            ("connection_id", "messages", "next"),
            {
                "type": "history",
                "connection_id": EXAMPLE_ROOM,
                "messages": [example_message],
                "next": None,
            },
        ),
        "pong": _frame("pong", "The answer to `ping`", "", {}),
        "error": _frame(
            "error",
            "A recoverable problem",
            "The socket stays open (unless a close follows, see the close codes).",
            {
                "code": {
                    "type": "string",
                    "oneOf": [
                        {"const": code, "description": meaning}
                        for code, meaning in ERROR_CODES.items()
                    ],
                },
                "message": {"type": "string", "description": "For humans; may change."},
                "ref": {
                    "type": ["string", "null"],
                    "description": "The `client_id` of a `send`, else the room, else null "
                    "(always null before `ready`).",
                },
                "connection_id": {
                    **ROOM,
                    "description": "The room a `join` with `connection_ids` failed for.",
                },
            },
            ("code", "message", "ref"),
            {
                "type": "error",
                "code": "not_joined",
                "message": "join the room first",
                "ref": EXAMPLE_ROOM,
            },
        ),
    }


# Which server frame answers which client frame (AsyncAPI operation replies).
REPLIES = {
    "auth": ["ready", "error"],
    "join": ["joined", "message", "error"],
    "leave": ["left", "error"],
    "send": ["ack", "error"],
    "history": ["history", "error"],
    "ping": ["pong"],
}


def document() -> dict:
    client = _client_frames(
        settings.CHAT_MAX_BODY_CHARS,
        settings.CHAT_MAX_ROOMS_PER_SOCKET,
        settings.CHAT_AUTH_TIMEOUT_SECONDS,
    )
    server = _server_frames()
    messages = {f"client.{k}": v for k, v in client.items()}
    messages |= {f"server.{k}": v for k, v in server.items()}
    channel_messages = {key: {"$ref": f"#/components/messages/{key}"} for key in messages}

    def refs(keys):
        return [{"$ref": f"{CHANNEL}/messages/{key}"} for key in keys]

    operations = {}
    for kind, message in client.items():
        operation = {
            "action": "receive",
            "channel": {"$ref": CHANNEL},
            "title": message["summary"],
            "summary": f"Client frame `{kind}`",
            "messages": refs([f"client.{kind}"]),
        }
        if kind in REPLIES:
            operation["reply"] = {
                "channel": {"$ref": CHANNEL},
                "messages": refs(f"server.{answer}" for answer in REPLIES[kind]),
            }
        operations[f"receive{kind.capitalize()}"] = operation
    for kind, message in server.items():
        operations[f"send{kind.capitalize()}"] = {
            "action": "send",
            "channel": {"$ref": CHANNEL},
            "title": message["summary"],
            "summary": f"Server frame `{kind}`",
            "messages": refs([f"server.{kind}"]),
        }
    close_table = "\n".join(f"| {code} | {meaning} |" for code, meaning in CLOSE_CODES.items())
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "chatsvc WebSocket protocol",
            "version": "1",
            "description": (
                "Real-time chat for LMS users. Every frame, in both directions, is one JSON "
                "object in a text frame with a string `type`. The prose reference is "
                "docs/protocol.md; the REST API (rooms, tokens) is /api/v1/openapi.json."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "production": {
                "host": "{host}",
                "protocol": "wss",
                "description": "Your chatsvc deployment.",
                "variables": {"host": {"default": "chat.example.com"}},
            },
            "local": {"host": "localhost:8000", "protocol": "ws", "description": "make run"},
        },
        "channels": {
            "socket": {
                "address": "/ws/v1/",
                "title": "The chat socket",
                "description": (
                    f"Authenticate with the first frame (`auth`, within "
                    f"{settings.CHAT_AUTH_TIMEOUT_SECONDS} s), then join rooms and chat. "
                    "Frame size: 64 KiB before auth, then the tenant's `max_frame_bytes`. "
                    "The server pings every 20 s. Closes the server decides carry a short close "
                    "reason (for logs: act on the code).\n\nClose codes:\n\n| code | when |\n"
                    "| --- | --- |\n" + close_table
                ),
                "messages": channel_messages,
                "bindings": {"ws": {"bindingVersion": "0.1.0"}},
                "x-close-codes": [
                    {"code": code, "description": meaning} for code, meaning in CLOSE_CODES.items()
                ],
            }
        },
        "operations": operations,
        "components": {
            "schemas": {
                "user": _object(
                    {
                        "id": {"type": "string", "description": "The LMS user id."},
                        "name": {"type": "string", "description": "Display name."},
                    },
                    ("id", "name"),
                ),
                "member": _object(
                    {
                        "id": {"type": "string", "description": "The LMS user id."},
                        "name": {"type": "string", "description": "Display name."},
                        "role": {"type": "string", "enum": ["member", "moderator"]},
                    },
                    ("id", "name"),
                ),
            },
            "messages": messages,
        },
    }
