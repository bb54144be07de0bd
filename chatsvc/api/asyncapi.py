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
from chatsvc.attachments import content as attachment_content
from chatsvc.core.ulid import ULID_RE
from chatsvc.messaging.message_state import SHOWN_REACTORS
from chatsvc.realtime import consumer, protocol, tokens
from chatsvc.rooms.moderation import PAST
from chatsvc.tenants.models import Tenant

CHANNEL = "#/channels/socket"
EXAMPLE_USER = {"id": "u7", "name": "Grace"}
ULID = {"type": "string", "pattern": ULID_RE.pattern, "minLength": 26, "maxLength": 26}
ROOM = {
    **ULID,
    "description": "A ConnectionId (room id).",
    "examples": ["01JD7X3K9Q4W6E2R8T5Y1V3N0P"],
}
MESSAGE_ID = {**ULID, "description": "A message id, assigned by the server; ids sort by arrival."}
EVENT_ID = {
    **ULID,
    "description": "The event's own id (not the message's), assigned by the server; sorts "
    "with the room's message ids.",
}
UPLOAD_ID = {**ULID, "description": "An upload's id, from the `upload` frame."}
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
ATTACHMENT = {"$ref": "#/components/schemas/attachment"}
REACTIONS = {"$ref": "#/components/schemas/reactions"}
HISTORY_ENTRY = {"$ref": "#/components/schemas/historyEntry"}
CLIENT_ID = {
    "type": "string",
    "minLength": 1,
    "maxLength": protocol.MAX_CLIENT_ID,
    "description": "Chosen by the client; the idempotency key (separate per frame type): "
    "resending it never changes anything twice.",
}
# Example ids (ULIDs) of things other than the room and the message.
EXAMPLE_EVENT = "01JD7X4B8M2N4P6Q8R0S2T4V6W"
EXAMPLE_UPLOAD = "01JD7X49ZQ3R5S7T9V1W3X5Y7Z"
EXAMPLE_TS = "2026-11-26T10:00:01.123Z"
EXAMPLE_LATER = "2026-11-26T10:02:30.456Z"
EXAMPLE_ATTACHMENT = {
    "id": EXAMPLE_UPLOAD,
    "name": "slide.png",
    "content_type": "image/png",
    "size": 48213,
    "url": "https://chatsvc-attachments.s3.amazonaws.com/t1/01JD.../slide.png?X-Amz-...",
    "url_expires_at": 1795687201,
}

_EDIT_SECONDS = Tenant._meta.get_field("message_edit_seconds").default
_MAX_BYTES = Tenant._meta.get_field("attachment_max_bytes").default
_ATTACHMENT_SEE = " See the Attachments section of docs/protocol.md and docs/attachments.md."

ERROR_CODES = {
    "bad_json": "The frame is not JSON, is nested too deeply, or holds a number too large "
    "to decode.",
    "bad_frame": "Not an object, no `type`, a field missing or of the wrong type, a value "
    "out of range, a binary frame; a blank `body` (unless attachments come with an empty "
    "one), or characters no store accepts; a bad `emoji`, `action`, `user_id`, `seconds` or "
    "`reason`; a moderator's `moderate` of themselves.",
    "not_authenticated": "The first frame was not `auth`, or none came in time (then close "
    "4401 or 4408).",
    "bad_token": "The token was refused: `message` names the check (bad signature, unknown "
    "or revoked key, malformed, expired, the user's sessions revoked ...); close 4401 "
    "follows with the same reason. Fetch a fresh token, then reconnect.",
    "forbidden": "Before `ready`: the tenant is disabled or the `Origin` is not allowed; close "
    "4403 follows. Stop. After it (the socket stays open): an `edit` of another user's "
    "message, a member's `delete` of another user's message, or a `moderate` by a member "
    "(not a moderator).",
    "unknown_type": "`type` is not a client frame type.",
    "already_authenticated": "A second `auth`.",
    "not_found": "No such room: also another tenant's room and one outside the token's "
    "`cids` (indistinguishable on purpose).",
    "room_closed": "The room is closed.",
    "removed": "The tenant (or a moderator's `ban`) removed this user from the room; joining "
    "fails until the tenant re-admits the user or the ban ends (a new token does not help). "
    "Stop trying.",
    "not_joined": "`send`/`edit`/`delete`/`react`/`moderate`/`upload`/`leave`/`typing`/"
    "`history` for a room this socket is not in (never joined, left, removed, or the room "
    "was closed): worth one rejoin.",
    "too_many_rooms": "The socket is already in the most rooms it may join.",
    "too_many_sockets": "The user already holds the tenant's most sockets per user; "
    "close 4409 follows.",
    "body_too_long": "`body` over the length limit.",
    "rate_limited": "Over one of the socket's two rate limits (`message` says which: "
    "messages - `send`, `typing`, `edit`, `delete`, `react`, `moderate`, `upload` - or "
    "control frames); the frame was dropped: resend later.",
    "not_stored": "SQS did not accept the message (or the change) in time; members may have "
    "seen it: resend the same `client_id`.",
    "overloaded": "Refused at once, nothing was created: too many messages wait for SQS in "
    "this process, or it is behind (its event loop, or the frames waiting for it, lag more "
    f"than {settings.CHAT_OVERLOAD_LAG_MS} ms: `send`, `edit`, `delete` and `react` are "
    "refused, `typing` is dropped). Resend the same `client_id` later: after "
    "`retry_after_ms` when the error has it, else with backoff. Also for an `auth` (then "
    "close 1013) or a `join` that got no admission turn in time: reconnect or join again "
    "after `retry_after_ms`.",
    "unavailable": "A backend is briefly unreachable; nothing was created or changed: retry "
    "with backoff (a `send`, `edit`, ... with the same `client_id`).",
    "history_unavailable": "The history store could not be read: retry the `history` frame.",
    "message_not_found": "`message_id` is not a message of this room (also another room's "
    "message), or not a message id.",
    "message_deleted": "The message was deleted: no edits, reactions or second deletion.",
    "edit_window_passed": "The message is older than the tenant's edit window "
    f"(`message_edit_seconds`, {_EDIT_SECONDS} s by default).",
    "edits_disabled": "The tenant allows no edits (`message_edit_seconds` is 0).",
    "too_many_reactions": "The message already has "
    f"{settings.CHAT_REACTION_KINDS_PER_MESSAGE} different emoji (and this is a new one), "
    f"or {settings.CHAT_REACTIONS_PER_MESSAGE} reactions in all.",
    "muted": "A moderator muted this user in the room: `send`, `edit`, `react` and `upload` "
    "are refused until the mute ends or is lifted; `message` says for how long.",
    "busy": "The message changed too often while the change was checked: resend the same "
    "`client_id`.",
    "attachments_disabled": "The tenant allows no attachments." + _ATTACHMENT_SEE,
    "attachment_too_large": "`size` is over the tenant's `attachment_max_bytes` "
    f"({_MAX_BYTES} bytes by default)." + _ATTACHMENT_SEE,
    "attachment_type_not_allowed": "`content_type` is not one of the tenant's "
    "`attachment_types`; `message` lists them." + _ATTACHMENT_SEE,
    "too_many_uploads": f"{settings.CHAT_ATTACHMENT_MAX_PENDING} uploads of the user wait "
    "to be sent already: send them or let them expire first." + _ATTACHMENT_SEE,
    "bad_attachment": "A bad `upload` (`name` empty, too long or with control characters; "
    "`size` under 1 byte; `content_type` not a content type) or bad `attachments` (not "
    f"1 to {protocol.MAX_ATTACHMENTS} upload ids)." + _ATTACHMENT_SEE,
    "attachment_not_found": "An upload id of `attachments` is not this user's upload in "
    "this room, or it expired before it was sent." + _ATTACHMENT_SEE,
    "attachment_not_uploaded": "An upload of `attachments` was not POSTed (completely) "
    "yet." + _ATTACHMENT_SEE,
    "attachment_rejected": "An upload's bytes are not of the declared type, of a type the "
    "tenant allows, or of the declared size: the file was deleted; upload it again."
    + _ATTACHMENT_SEE,
    "attachment_in_use": "An upload of `attachments` belongs to another message already."
    + _ATTACHMENT_SEE,
    "internal": "An unexpected server error (a bug): resend.",
}

CLOSE_CODES = {
    consumer.CLOSE_TOO_LARGE: "A frame above the size limit (64 KiB before auth, then the "
    "tenant's `max_frame_bytes`).",
    consumer.CLOSE_RESTART: "The server is restarting (deploys): reconnect with backoff and "
    "resume with `since`.",
    consumer.CLOSE_TRY_LATER: "The server could not check the token right now; or this socket "
    f"fell behind: more than {settings.CHAT_SLOW_READER_BYTES} bytes waited for it, unread, "
    "for 5 s (the close reason says how many). Reconnect later and resume with `since`.",
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


def _frame(
    kind: str,
    summary: str,
    description: str,
    fields: dict,
    required=(),
    example=None,
    more_examples: dict | None = None,
):
    """One frame as an AsyncAPI message; `more_examples` maps example names to payloads."""
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
    message["examples"] += [
        {"name": name, "payload": payload} for name, payload in (more_examples or {}).items()
    ]
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
            "missed messages and content events come first (`message`, `message_edited`, "
            "`message_deleted`, `reaction` and `moderation` frames in `seq` order), then `joined "
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
            "message: it is answered with the original `id`, `seq` and `ts`. With "
            "`attachments` the server first checks each upload (uploaded, the sender's own in "
            "this room, its bytes of an allowed type and the declared one, in no other "
            "message); `body` may then be empty.",
            {
                **room,
                "client_id": {
                    **CLIENT_ID,
                    "description": "Chosen by the client; the idempotency key.",
                },
                "body": {
                    "type": "string",
                    "maxLength": max_body,
                    "description": "Not blank or invisible only; no control characters except "
                    'tab and line breaks. May be `""` (exactly) when `attachments` come '
                    "with it.",
                },
                "attachments": {
                    "type": "array",
                    "items": UPLOAD_ID,
                    "minItems": 1,
                    "maxItems": protocol.MAX_ATTACHMENTS,
                    "description": "Upload ids from `upload` frames, each POSTed already "
                    "(an id listed twice counts once).",
                },
            },
            ("connection_id", "client_id", "body"),
            {
                "type": "send",
                "connection_id": EXAMPLE_ROOM,
                "client_id": "c-1",
                "body": "hi",
            },
            {
                "send-attachments": {
                    "type": "send",
                    "connection_id": EXAMPLE_ROOM,
                    "client_id": "c-2",
                    "body": "",
                    "attachments": [EXAMPLE_UPLOAD],
                }
            },
        ),
        "edit": _frame(
            "edit",
            "Edit one's own message",
            "Only the sender (`forbidden`), within the tenant's edit window "
            f"(`message_edit_seconds`, {_EDIT_SECONDS} s by default: `edit_window_passed`; 0: "
            "`edits_disabled`), not a deleted message (`message_deleted`), not while muted "
            "(`muted`). Every member gets `message_edited`, then the sender `ack` with the "
            "event's `id` and `seq`.",
            {
                **room,
                "client_id": CLIENT_ID,
                "message_id": {**MESSAGE_ID, "description": "The message to edit."},
                "body": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": max_body,
                    "description": "The new body: not blank or invisible only; no control "
                    "characters except tab and line breaks.",
                },
            },
            ("connection_id", "client_id", "message_id", "body"),
            {
                "type": "edit",
                "connection_id": EXAMPLE_ROOM,
                "client_id": "e-1",
                "message_id": EXAMPLE_MESSAGE,
                "body": "hello",
            },
        ),
        "delete": _frame(
            "delete",
            "Delete a message",
            "The sender deletes their own message, a moderator any message (else `forbidden`); "
            "allowed while muted; `message_deleted` if it is already. Every member gets "
            "`message_deleted`, then the sender `ack`; history keeps a tombstone.",
            {
                **room,
                "client_id": CLIENT_ID,
                "message_id": {**MESSAGE_ID, "description": "The message to delete."},
            },
            ("connection_id", "client_id", "message_id"),
            {
                "type": "delete",
                "connection_id": EXAMPLE_ROOM,
                "client_id": "d-1",
                "message_id": EXAMPLE_MESSAGE,
            },
        ),
        "react": _frame(
            "react",
            "Toggle a reaction",
            "Adds the user's `emoji` to the message, or takes it back when it is there. At "
            f"most {settings.CHAT_REACTION_KINDS_PER_MESSAGE} different emoji and "
            f"{settings.CHAT_REACTIONS_PER_MESSAGE} reactions per message "
            "(`too_many_reactions`); not on deleted messages, not while muted. Every member "
            "gets `reaction`, then the sender `ack`.",
            {
                **room,
                "client_id": CLIENT_ID,
                "message_id": {**MESSAGE_ID, "description": "The message to react to."},
                "emoji": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": protocol.MAX_EMOJI_CHARS,
                    "pattern": "^[^\\s\\u0000-\\u001f]+$",
                    "description": "A Unicode emoji or a tenant's own `:name:`: no spaces or "
                    "control characters.",
                },
            },
            ("connection_id", "client_id", "message_id", "emoji"),
            {
                "type": "react",
                "connection_id": EXAMPLE_ROOM,
                "client_id": "r-1",
                "message_id": EXAMPLE_MESSAGE,
                "emoji": "\N{THUMBS UP SIGN}",
            },
        ),
        "moderate": _frame(
            "moderate",
            "Moderate a user in the room",
            "Moderators only (token `role: moderator`; else `forbidden`), not on themselves "
            "(`bad_frame`). `mute` (for `seconds`): the user's `send`, `edit`, `react`, "
            "`upload` get `error muted` and their `typing` shows nowhere; `kick`: the user's "
            "sockets get `left {reason: removed}` and may rejoin; `ban` (for `seconds`, or "
            "until lifted): they leave and `join` gets `error removed`; `unmute`/`unban` lift "
            "them. Every member gets `moderation`, then the sender `ack`.",
            {
                **room,
                "client_id": CLIENT_ID,
                "action": {"type": "string", "enum": list(protocol.ACTIONS)},
                "user_id": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": protocol.MAX_USER_ID,
                    "description": "The LMS user id of the user to moderate.",
                },
                "seconds": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": protocol.MAX_SECONDS,
                    "description": "How long a `mute` (needed) or a `ban` (optional: without "
                    "it, until lifted) lasts; no other action takes it.",
                },
                "reason": {
                    "type": "string",
                    "maxLength": protocol.MAX_REASON_CHARS,
                    "description": "Shown to the room in `moderation`.",
                },
            },
            ("connection_id", "client_id", "action", "user_id"),
            {
                "type": "moderate",
                "connection_id": EXAMPLE_ROOM,
                "client_id": "mod-1",
                "action": "mute",
                "user_id": "u9",
                "seconds": 600,
                "reason": "spam",
            },
            {
                "moderate-kick": {
                    "type": "moderate",
                    "connection_id": EXAMPLE_ROOM,
                    "client_id": "mod-2",
                    "action": "kick",
                    "user_id": "u9",
                }
            },
        ),
        "upload": _frame(
            "upload",
            "Ask to upload a file",
            "Answered by an `upload` frame: a presigned POST to S3 for exactly this size and "
            "type; POST its `fields` and then the file to its `url`, then `send` with "
            "`attachments: [id]`. Refused at once when the tenant allows no attachments "
            "(`attachments_disabled`), not this type (`attachment_type_not_allowed`) or size "
            f"(`attachment_too_large`; {_MAX_BYTES} bytes by default), or "
            f"{settings.CHAT_ATTACHMENT_MAX_PENDING} uploads of the user wait to be sent "
            "(`too_many_uploads`). Not while muted.",
            {
                **room,
                "client_id": CLIENT_ID,
                "name": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": attachment_content.MAX_NAME_CHARS,
                    "description": "The file's name, shown to the room and used for the "
                    "download; not blank, no control characters.",
                },
                "content_type": {
                    "type": "string",
                    "description": "The file's content type (e.g. `image/png`); one of the "
                    "tenant's `attachment_types`. The server checks the bytes match it.",
                },
                "size": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "The file's size in bytes, at most the tenant's "
                    "`attachment_max_bytes`; the POST must carry exactly this many.",
                },
            },
            ("connection_id", "client_id", "name", "content_type", "size"),
            {
                "type": "upload",
                "connection_id": EXAMPLE_ROOM,
                "client_id": "u-1",
                "name": "slide.png",
                "content_type": "image/png",
                "size": 48213,
            },
        ),
        "read": _frame(
            "read",
            "Report how far the user has read a room",
            "The user has seen the room up to `seq` (any seq: of a message or an event). "
            "Coalesced: each socket writes its position and sends the room one `read` "
            f"receipt at most every {settings.CHAT_READ_COALESCE_SECONDS} s per room, "
            "however many frames; a position never moves back. Unread counts "
            "(`GET /api/v1/users/{user_id}/unread`) count the messages after it. No answer.",
            {**room, "seq": {"type": "integer", "minimum": 0}},
            ("connection_id", "seq"),
            {"type": "read", "connection_id": EXAMPLE_ROOM, "seq": 42},
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
    # `body` may be "" only with attachments.
    frames["send"]["payload"]["anyOf"] = [
        {"required": ["attachments"]},
        {"properties": {"body": {"minLength": 1}}},
    ]
    # `mute` needs `seconds`, `ban` may have it, no other action takes it.
    timed = [action for action in protocol.ACTIONS if action in ("mute", "ban")]
    frames["moderate"]["payload"]["oneOf"] = [
        {"properties": {"action": {"const": "mute"}}, "required": ["seconds"]},
        {"properties": {"action": {"enum": [a for a in timed if a != "mute"]}}},
        {
            "properties": {"action": {"enum": [a for a in protocol.ACTIONS if a not in timed]}},
            "not": {"required": ["seconds"]},
        },
    ]
    if max_join:  # one room or several, never both
        frames["join"]["payload"]["oneOf"] = [
            {"required": ["connection_id"], "not": {"required": ["connection_ids"]}},
            {"required": ["connection_ids"], "not": {"required": ["connection_id"]}},
        ]
    else:
        frames["join"]["payload"]["required"].append("connection_id")
    return frames


MESSAGE_FIELDS = {
    "connection_id": ROOM,
    "id": MESSAGE_ID,
    "seq": SEQ,
    "sender": USER,
    "body": {"type": "string", "description": '`""` only when the message has attachments.'},
    "ts": TS,
}
EXAMPLE_MESSAGE_FIELDS = {
    "connection_id": EXAMPLE_ROOM,
    "id": EXAMPLE_MESSAGE,
    "seq": 42,
    "sender": EXAMPLE_USER,
    "body": "hi",
    "ts": EXAMPLE_TS,
}


def _event_fields(fields: dict) -> dict:
    """A content event's fields: the room, its own id and seq, `fields`, its time."""
    return {
        "connection_id": ROOM,
        "id": EVENT_ID,
        "seq": {**SEQ, "description": "The event's place in its room (shared with messages)."},
        **fields,
        "ts": {**TS, "description": "When the change was made (ISO 8601 UTC, milliseconds)."},
    }


def _event_example(kind: str, seq: int, fields: dict) -> dict:
    return {
        "type": kind,
        "connection_id": EXAMPLE_ROOM,
        "id": EXAMPLE_EVENT,
        "seq": seq,
        **fields,
        "ts": EXAMPLE_LATER,
    }


def _server_frames() -> dict:
    message_fields = {
        **MESSAGE_FIELDS,
        "attachments": {
            "type": "array",
            "items": ATTACHMENT,
            "minItems": 1,
            "maxItems": protocol.MAX_ATTACHMENTS,
            "description": "The files the message carries, in the order sent (absent: none). "
            f"Download links expire after {settings.CHAT_ATTACHMENT_URL_SECONDS} s; "
            "`history` always gives fresh ones.",
        },
    }
    example_message = EXAMPLE_MESSAGE_FIELDS
    acting_user = {
        "oneOf": [USER, {"type": "null"}],
        "description": "Who did it; `null`: the tenant's backend (REST API).",
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
                    "tenant removed this user from the room, or a moderator kicked or banned "
                    "them (after a removal or a ban do not rejoin: a `join` gets `error "
                    "removed` until the tenant re-admits the user or the ban ends; after a "
                    "kick a `join` works).",
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
            tuple(key for key in message_fields if key != "attachments"),
            {"type": "message", **example_message},
            {
                "message-attachments": {
                    "type": "message",
                    **example_message,
                    "seq": 43,
                    "body": "",
                    "attachments": [EXAMPLE_ATTACHMENT],
                }
            },
        ),
        "ack": _frame(
            "ack",
            "The message or change is stored",
            "To the sender of a `send`, `edit`, `delete`, `react` or `moderate`, once SQS "
            "accepted the message or the change (for a change, `id`, `seq` and `ts` are the "
            "event's). A resent `client_id` gets the first attempt's `ack`.",
            {
                "client_id": {
                    "type": "string",
                    "maxLength": protocol.MAX_CLIENT_ID,
                    "description": "The acknowledged frame's `client_id`.",
                },
                "id": {
                    **ULID,
                    "description": "The message's id (`send`), or the event's (`edit`, "
                    "`delete`, `react`, `moderate`).",
                },
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
        "message_edited": _frame(
            "message_edited",
            "A message was edited",
            "To every member (the editor too), in room order; replayed on resume. Show "
            "`body` for `message_id` from now on.",
            _event_fields(
                {
                    "message_id": {**MESSAGE_ID, "description": "The edited message."},
                    "body": {"type": "string", "description": "The new body."},
                    "by": {**USER, "description": "The sender, who edited it."},
                }
            ),
            ("connection_id", "id", "seq", "message_id", "body", "by", "ts"),
            _event_example(
                "message_edited",
                44,
                {"message_id": EXAMPLE_MESSAGE, "body": "hello", "by": EXAMPLE_USER},
            ),
        ),
        "message_deleted": _frame(
            "message_deleted",
            "A message was deleted",
            "To every member, in room order; replayed on resume. Show `message_id` as "
            "deleted (its body, reactions and attachments are gone).",
            _event_fields(
                {
                    "message_id": {**MESSAGE_ID, "description": "The deleted message."},
                    "by": acting_user,
                    "moderated": {
                        "type": "boolean",
                        "description": "True when not the sender's own deletion (a moderator "
                        "or the tenant's backend).",
                    },
                }
            ),
            ("connection_id", "id", "seq", "message_id", "by", "moderated", "ts"),
            _event_example(
                "message_deleted",
                45,
                {"message_id": EXAMPLE_MESSAGE, "by": EXAMPLE_USER, "moderated": False},
            ),
        ),
        "reaction": _frame(
            "reaction",
            "A reaction was added or taken back",
            "To every member, in room order; replayed on resume. Replace the message's "
            "reactions with `reactions`.",
            _event_fields(
                {
                    "message_id": {**MESSAGE_ID, "description": "The message reacted to."},
                    "emoji": {"type": "string", "maxLength": protocol.MAX_EMOJI_CHARS},
                    "user": {**USER, "description": "Who toggled the reaction."},
                    "added": {
                        "type": "boolean",
                        "description": "True: added; false: taken back.",
                    },
                    "reactions": REACTIONS,
                }
            ),
            (
                "connection_id",
                "id",
                "seq",
                "message_id",
                "emoji",
                "user",
                "added",
                "reactions",
                "ts",
            ),
            _event_example(
                "reaction",
                46,
                {
                    "message_id": EXAMPLE_MESSAGE,
                    "emoji": "\N{THUMBS UP SIGN}",
                    "user": EXAMPLE_USER,
                    "added": True,
                    "reactions": [
                        {"emoji": "\N{THUMBS UP SIGN}", "count": 2, "user_ids": ["u3", "u7"]}
                    ],
                },
            ),
        ),
        "moderation": _frame(
            "moderation",
            "A moderation action",
            "To every member, in room order; replayed on resume. A muted user's `send`, "
            "`edit`, `react` and `upload` get `error muted`; a kicked or banned user's sockets "
            "get `left {reason: removed}`.",
            _event_fields(
                {
                    "action": {"type": "string", "enum": list(PAST.values())},
                    "user": _object(
                        {"id": {"type": "string", "description": "The LMS user id."}}, ("id",)
                    ),
                    "by": acting_user,
                    "until": {
                        "oneOf": [TS, {"type": "null"}],
                        "description": "When a mute or a timed ban ends; else `null`.",
                    },
                    "reason": {
                        "oneOf": [
                            {"type": "string", "maxLength": protocol.MAX_REASON_CHARS},
                            {"type": "null"},
                        ],
                        "description": "The moderator's reason, or `null`.",
                    },
                }
            ),
            ("connection_id", "id", "seq", "action", "user", "by", "until", "reason", "ts"),
            _event_example(
                "moderation",
                47,
                {
                    "action": "muted",
                    "user": {"id": "u9"},
                    "by": {"id": "u1", "name": "Tutor"},
                    "until": "2026-11-26T10:12:30.456Z",
                    "reason": "spam",
                },
            ),
        ),
        "upload": _frame(
            "upload",
            "Where to upload the file",
            "The answer to `upload`: POST `fields`, then the file (last), as "
            "multipart/form-data to `url` before `expires_at`; then `send` with "
            "`attachments: [id]`.",
            {
                "connection_id": ROOM,
                "client_id": {
                    "type": "string",
                    "maxLength": protocol.MAX_CLIENT_ID,
                    "description": "The `upload` frame's `client_id`.",
                },
                "id": {**UPLOAD_ID, "description": "The upload's id, for `send`'s `attachments`."},
                "url": {"type": "string", "format": "uri", "description": "Where to POST."},
                "fields": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "Form fields to POST with the file, as given.",
                },
                "expires_at": {
                    "type": "integer",
                    "description": "Epoch seconds: the POST is refused after it "
                    f"({settings.CHAT_ATTACHMENT_UPLOAD_SECONDS} s after the grant).",
                },
                "max_bytes": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "The tenant's largest file, in bytes.",
                },
            },
            ("connection_id", "client_id", "id", "url", "fields", "expires_at", "max_bytes"),
            {
                "type": "upload",
                "connection_id": EXAMPLE_ROOM,
                "client_id": "u-1",
                "id": EXAMPLE_UPLOAD,
                "url": "https://chatsvc-attachments.s3.amazonaws.com/",
                "fields": {
                    "Content-Type": "image/png",
                    "key": "t1/01JD.../slide.png",
                    "x-amz-algorithm": "AWS4-HMAC-SHA256",
                    "x-amz-credential": "AKIA.../20261126/us-east-1/s3/aws4_request",
                    "x-amz-date": "20261126T100001Z",
                    "policy": "eyJleHBpcmF0aW9uIjog...",
                    "x-amz-signature": "0f1e2d...",
                },
                "expires_at": 1795684201,
                "max_bytes": _MAX_BYTES,
            },
        ),
        "read": _frame(
            "read",
            "Someone read the room",
            "A read receipt: `user` has seen the room up to `seq`. To the room's other "
            "sockets (also the user's own other devices), at most one per user per room "
            f"every {settings.CHAT_READ_COALESCE_SECONDS} s.",
            {"connection_id": ROOM, "user": USER, "seq": SEQ},
            ("connection_id", "user", "seq"),
            {"type": "read", "connection_id": EXAMPLE_ROOM, "user": EXAMPLE_USER, "seq": 42},
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
                    "maxItems": protocol.MAX_HISTORY_LIMIT,
                    "description": "Newest first, each shaped like `message` without `type`, "
                    "as it is now (edits, reactions, deletions applied; fresh attachment "
                    "links); `seq` is absent on messages stored before rooms had sequences.",
                    "items": HISTORY_ENTRY,
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
            {
                "history-changed": {
                    "type": "history",
                    "connection_id": EXAMPLE_ROOM,
                    "messages": [
                        {
                            **example_message,
                            "id": "01JD7X4D2E3F4G5H6J7K8M9N0P",
                            "seq": 43,
                            "body": "",
                            "attachments": [EXAMPLE_ATTACHMENT],
                        },
                        {
                            **example_message,
                            "body": "hello",
                            "edited_at": EXAMPLE_LATER,
                            "reactions": [
                                {"emoji": "\N{THUMBS UP SIGN}", "count": 1, "user_ids": ["u3"]}
                            ],
                        },
                        {
                            **{k: v for k, v in example_message.items() if k != "body"},
                            "id": "01JD7X3ZZ8Y7X6W5V4T3S2R1Q0",
                            "seq": 41,
                            "deleted": True,
                            "deleted_at": EXAMPLE_LATER,
                            "deleted_by": {"id": "u1", "name": "Tutor"},
                        },
                    ],
                    "next": "01JD7X3ZZ8Y7X6W5V4T3S2R1Q0",
                }
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
                    "description": "The `client_id` of a `send`, `edit`, `delete`, `react`, "
                    "`moderate` or `upload`, else the room, else null (always null before "
                    "`ready`).",
                },
                "connection_id": {
                    **ROOM,
                    "description": "The room a `join` with `connection_ids` failed for.",
                },
                "retry_after_ms": {
                    "type": "integer",
                    "minimum": 0,
                    "description": "With `overloaded` when the server is behind delivering "
                    "or gave an `auth` or `join` no turn: resend (reconnect, join) no sooner "
                    "than this many milliseconds from now (jittered).",
                },
            },
            ("code", "message", "ref"),
            {
                "type": "error",
                "code": "not_joined",
                "message": "join the room first",
                "ref": EXAMPLE_ROOM,
            },
            {
                "error-content": {
                    "type": "error",
                    "code": "edit_window_passed",
                    "message": f"messages can be edited for {_EDIT_SECONDS} s after sending",
                    "ref": "e-1",
                },
                "error-attachment": {
                    "type": "error",
                    "code": "attachment_rejected",
                    "message": f"{EXAMPLE_UPLOAD}: the content is application/pdf, not the "
                    "declared image/png",
                    "ref": "c-2",
                },
                "error-overloaded": {
                    "type": "error",
                    "code": "overloaded",
                    "message": "the server is behind delivering messages; resend later",
                    "ref": "c-3",
                    "retry_after_ms": 420,
                },
            },
        ),
    }


def _attachment_schema() -> dict:
    schema = _object(
        {
            "id": UPLOAD_ID,
            "name": {"type": "string", "maxLength": attachment_content.MAX_NAME_CHARS},
            "content_type": {
                "type": "string",
                "description": "The type the server found in the file's bytes.",
            },
            "size": {"type": "integer", "minimum": 1, "description": "Bytes."},
            "url": {
                "type": "string",
                "format": "uri",
                "description": "A presigned GET that downloads the file under its name.",
            },
            "url_expires_at": {
                "type": "integer",
                "description": "Epoch seconds: `url` works until then "
                f"({settings.CHAT_ATTACHMENT_URL_SECONDS} s after it was made).",
            },
        },
        ("id", "name", "content_type", "size", "url", "url_expires_at"),
    )
    schema["description"] = "A file a message carries."
    return schema


def _reactions_schema() -> dict:
    reaction = _object(
        {
            "emoji": {"type": "string", "maxLength": protocol.MAX_EMOJI_CHARS},
            "count": {"type": "integer", "minimum": 1, "description": "Users with this emoji."},
            "user_ids": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 1,
                "maxItems": SHOWN_REACTORS,
                "description": f"The first {SHOWN_REACTORS} of them, first reacted first.",
            },
        },
        ("emoji", "count", "user_ids"),
    )
    return {
        "type": "array",
        "items": reaction,
        "maxItems": settings.CHAT_REACTION_KINDS_PER_MESSAGE,
        "description": "A message's reactions, one entry per emoji, first used first.",
    }


def _history_entry_schema() -> dict:
    """A message as it is now: edited, reacted to, or a tombstone without its content."""
    schema = _object(
        {
            **MESSAGE_FIELDS,
            "edited_at": {**TS, "description": "When it was last edited (absent: never)."},
            "reactions": {**REACTIONS, "description": "Present when it has reactions."},
            "attachments": {
                "type": "array",
                "items": ATTACHMENT,
                "minItems": 1,
                "maxItems": protocol.MAX_ATTACHMENTS,
                "description": "Its files, with fresh download links.",
            },
            "deleted": {
                "type": "boolean",
                "const": True,
                "description": "A tombstone: the message was deleted; no `body`, "
                "`edited_at`, `reactions` or `attachments`.",
            },
            "deleted_at": {**TS, "description": "When it was deleted."},
            "deleted_by": {
                "oneOf": [USER, {"type": "null"}],
                "description": "Who deleted it; `null`: the tenant's backend (REST API).",
            },
        },
        ("connection_id", "id", "sender", "ts"),
    )
    content = ("body", "edited_at", "reactions", "attachments")
    schema["oneOf"] = [
        {"required": ["body"], "not": {"required": ["deleted"]}},
        {
            "required": ["deleted", "deleted_at", "deleted_by"],
            "not": {"anyOf": [{"required": [name]} for name in content]},
        },
    ]
    schema["description"] = "A message in `history`, or the tombstone of a deleted one."
    return schema


# Which server frame answers which client frame (AsyncAPI operation replies).
REPLIES = {
    "auth": ["ready", "error"],
    # the replay of a resume: messages and content events, then `joined`
    "join": [
        "joined",
        "message",
        "message_edited",
        "message_deleted",
        "reaction",
        "moderation",
        "error",
    ],
    "leave": ["left", "error"],
    "send": ["ack", "error"],
    "edit": ["ack", "error"],
    "delete": ["ack", "error"],
    "react": ["ack", "error"],
    "moderate": ["ack", "error"],
    "upload": ["upload", "error"],
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
                "attachment": _attachment_schema(),
                "reactions": _reactions_schema(),
                "historyEntry": _history_entry_schema(),
            },
            "messages": messages,
        },
    }
