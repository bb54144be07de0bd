"""Protocol v1: parsing and validating client frames (docs/protocol.md).

`parse_frame` turns one text frame into a ClientFrame or raises FrameError
with a stable error code; the socket stays open on every FrameError.
"""

import json
from dataclasses import dataclass

from chatsvc.core.text import is_blank, is_storable
from chatsvc.core.ulid import is_ulid

MAX_CLIENT_ID = 64
MAX_HISTORY_LIMIT = 100
MAX_EPOCH = 64
MAX_JOIN_ROOMS = 20  # rooms one `join {connection_ids}` frame may name
MAX_EMOJI_CHARS = 32
MAX_ATTACHMENTS = 10  # uploads one message may carry
# Moderation (chatsvc.rooms.moderation): actions, and the bounds of their fields.
ACTIONS = ("mute", "unmute", "kick", "ban", "unban")
MAX_SECONDS = 30 * 86400  # a mute or a timed ban
MAX_REASON_CHARS = 500
MAX_USER_ID = 128

# Frames that produce messages for others: limited by the tenant's messages_per_second.
# Every other frame (join, leave, ping, history, ...) is a control frame with its own,
# more generous bucket (chatsvc.realtime.ratelimit).
MESSAGE_TYPES = frozenset({"send", "typing", "edit", "delete", "react", "moderate", "upload"})
# Frames acknowledged with `ack {client_id, id, seq, ts}` once SQS has their record.
ACKED_TYPES = frozenset({"send", "edit", "delete", "react", "moderate"})
# Frames whose client_id is checked like a send's (an `upload` is answered in kind).
CLIENT_ID_TYPES = ACKED_TYPES | {"upload"}

# type -> {field: (python type(s), required)}
FIELDS: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    "auth": {"token": (str, True)},
    # One room (`connection_id`, with `since`/`epoch` values) or several
    # (`connection_ids`, with `since`/`epoch` maps keyed by connection_id).
    "join": {
        "connection_id": (str, False),
        "connection_ids": (list, False),
        "since": ((int, dict), False),
        "epoch": ((str, dict), False),
    },
    "leave": {"connection_id": (str, True)},
    "send": {
        "connection_id": (str, True),
        "client_id": (str, True),
        "body": (str, True),
        "attachments": (list, False),
    },
    "upload": {
        "connection_id": (str, True),
        "client_id": (str, True),
        "name": (str, True),
        "content_type": (str, True),
        "size": (int, True),
    },
    "typing": {"connection_id": (str, True)},
    "edit": {
        "connection_id": (str, True),
        "client_id": (str, True),
        "message_id": (str, True),
        "body": (str, True),
    },
    "delete": {"connection_id": (str, True), "client_id": (str, True), "message_id": (str, True)},
    "react": {
        "connection_id": (str, True),
        "client_id": (str, True),
        "message_id": (str, True),
        "emoji": (str, True),
    },
    "moderate": {
        "connection_id": (str, True),
        "client_id": (str, True),
        "action": (str, True),
        "user_id": (str, True),
        "seconds": (int, False),
        "reason": (str, False),
    },
    "history": {"connection_id": (str, True), "before": (str, False), "limit": (int, False)},
    "read": {"connection_id": (str, True), "seq": (int, True)},
    "ping": {},
}


class FrameError(Exception):
    def __init__(
        self,
        code: str,
        message: str,
        ref: str | None = None,
        *,
        connection_id: str | None = None,
        retry_after_ms: int | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref
        self.connection_id = connection_id  # errors about one room of a join name it
        self.retry_after_ms = retry_after_ms  # when the server can tell when to resend

    def frame(self) -> dict:
        frame = {"type": "error", "code": self.code, "message": self.message, "ref": self.ref}
        if self.connection_id is not None:
            frame["connection_id"] = self.connection_id
        if self.retry_after_ms is not None:
            frame["retry_after_ms"] = self.retry_after_ms
        return frame


@dataclass(frozen=True, slots=True)
class ClientFrame:
    type: str
    data: dict

    def __getattr__(self, name):
        try:
            return self.data[name]
        except KeyError:
            raise AttributeError(name) from None


def decode(text: str):
    """The frame's JSON, or FrameError: also for nesting or numbers too large to decode."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FrameError("bad_json", f"frame is not valid JSON: {exc.msg}") from exc
    except RecursionError as exc:
        raise FrameError("bad_json", "frame is nested too deeply") from exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise FrameError("bad_json", "frame holds a value too large to decode") from exc


def parse_frame(text: str, *, max_body_chars: int) -> ClientFrame:
    return parse_data(decode(text), max_body_chars=max_body_chars)


def parse_data(data, *, max_body_chars: int) -> ClientFrame:
    """Validate a decoded frame (see `decode`)."""
    if not isinstance(data, dict):
        raise FrameError("bad_frame", "frame must be a JSON object")
    kind = data.get("type")
    ref = _ref_of(data)
    if not isinstance(kind, str):
        raise FrameError("bad_frame", "frame needs a string 'type'", ref)
    spec = FIELDS.get(kind)
    if spec is None:
        raise FrameError("unknown_type", f"unknown frame type {kind[:40]!r}", ref)
    values = {}
    for name, (expected, required) in spec.items():
        value = data.get(name)
        if value is None:
            if required:
                raise FrameError("bad_frame", f"'{kind}' needs field '{name}'", ref)
            continue
        if not isinstance(value, expected) or isinstance(value, bool):
            kinds = expected if isinstance(expected, tuple) else (expected,)
            names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            raise FrameError("bad_frame", f"'{name}' must be {names}", ref)
        values[name] = value
    _check_values(kind, values, ref, max_body_chars)
    return ClientFrame(kind, values)


def reference_of(text: str) -> str | None:
    """What an error about this raw frame refers to, if it can be told."""
    try:
        data = decode(text)
    except FrameError:
        return None
    return ref_of(data)


def ref_of(data) -> str | None:
    """What an error about this decoded frame refers to, if it can be told."""
    return _ref_of(data) if isinstance(data, dict) else None


def kind_of(data) -> str | None:
    """The `type` of a decoded frame, if it has a string one."""
    kind = data.get("type") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else None


def cost_of(data) -> int:
    """Rate-limit tokens a frame spends: a join pays for each room it names (a
    lookup each), at most MAX_JOIN_ROOMS; every other frame pays one."""
    if kind_of(data) == "join" and isinstance(data.get("connection_ids"), list):
        return max(1, min(len(data["connection_ids"]), MAX_JOIN_ROOMS))
    return 1


def join_targets(frame: ClientFrame) -> list[tuple[str, int | None, str | None]]:
    """The rooms a valid `join` names, in order, each with its `since` and `epoch`."""
    since, epoch = frame.data.get("since"), frame.data.get("epoch")
    if "connection_id" in frame.data:
        return [(frame.connection_id, since, epoch)]
    since, epoch = since or {}, epoch or {}
    return [(cid, since.get(cid), epoch.get(cid)) for cid in frame.connection_ids]


def _ref_of(data: dict) -> str | None:
    """What an error refers to: the client_id of a send, else the room."""
    for name in ("client_id", "connection_id"):
        value = data.get(name)
        if isinstance(value, str):
            return value[:MAX_CLIENT_ID]
    return None


_TYPE_NAMES = {str: "a string", int: "an integer", list: "a list", dict: "an object"}


def _check_values(kind: str, values: dict, ref: str | None, max_body_chars: int) -> None:
    cid = values.get("connection_id")
    if kind == "join":
        _check_join(values, ref)  # a join reports an unknown room per room, with its id
    elif cid is not None and not is_ulid(cid):
        raise FrameError("not_found", "no such room", ref)
    if kind in CLIENT_ID_TYPES:
        client_id = values["client_id"]
        if not 0 < len(client_id) <= MAX_CLIENT_ID or not is_storable(client_id):
            raise FrameError(
                "bad_frame", f"client_id must be 1 to {MAX_CLIENT_ID} plain characters", ref
            )
    if "message_id" in values and not is_ulid(values["message_id"]):
        raise FrameError("message_not_found", "no such message in this room", ref)
    if kind == "send" and "attachments" in values:
        _check_attachments(values, ref)
    if "body" in values and not (values["body"] == "" and values.get("attachments")):
        _check_body(values["body"], ref, max_body_chars)
    if kind == "upload" and values["size"] < 1:
        raise FrameError("bad_attachment", "size must be 1 byte or more", ref)
    if kind == "react" and (problem := check_emoji(values["emoji"])):
        raise FrameError("bad_frame", problem, ref)
    if kind == "moderate":
        _check_moderation(values, ref)
    if kind == "read" and values["seq"] < 0:
        raise FrameError("bad_frame", "seq must be 0 or more", ref)
    if kind == "history":
        limit = values.get("limit", 50)
        if not 1 <= limit <= MAX_HISTORY_LIMIT:
            raise FrameError("bad_frame", f"limit must be 1 to {MAX_HISTORY_LIMIT}", ref)
        before = values.get("before")
        if before is not None and not is_ulid(before):
            raise FrameError("bad_frame", "before must be a message id", ref)


def check_emoji(emoji: str) -> str | None:
    """Why `emoji` cannot be a reaction, or None: any short text without spaces
    (a Unicode emoji, or a tenant's own `:name:`)."""
    if not 0 < len(emoji) <= MAX_EMOJI_CHARS:
        return f"emoji must be 1 to {MAX_EMOJI_CHARS} characters"
    if not is_storable(emoji) or any(char.isspace() or ord(char) < 32 for char in emoji):
        return "emoji must not contain spaces, control characters or lone surrogates"
    return None


def _check_attachments(values: dict, ref: str | None) -> None:
    ids = values["attachments"]
    if not 1 <= len(ids) <= MAX_ATTACHMENTS or not all(isinstance(i, str) for i in ids):
        raise FrameError(
            "bad_attachment", f"attachments must list 1 to {MAX_ATTACHMENTS} upload ids", ref
        )
    values["attachments"] = list(dict.fromkeys(ids))


def _check_body(body: str, ref: str | None, max_body_chars: int) -> None:
    if is_blank(body):
        raise FrameError("bad_frame", "body must not be empty or invisible", ref)
    if not is_storable(body):
        raise FrameError(
            "bad_frame",
            "body contains characters that cannot be stored "
            "(control characters or lone surrogates)",
            ref,
        )
    if len(body) > max_body_chars:
        raise FrameError("body_too_long", f"body exceeds {max_body_chars} characters", ref)


def _check_moderation(values: dict, ref: str | None) -> None:
    action, seconds = values["action"], values.get("seconds")
    if action not in ACTIONS:
        raise FrameError("bad_frame", f"action must be one of {', '.join(ACTIONS)}", ref)
    user_id = values["user_id"]
    if not 0 < len(user_id) <= MAX_USER_ID or not is_storable(user_id):
        raise FrameError("bad_frame", f"user_id must be 1 to {MAX_USER_ID} plain characters", ref)
    if action == "mute" and seconds is None:
        raise FrameError("bad_frame", "'mute' needs 'seconds'", ref)
    if seconds is not None and not 1 <= seconds <= MAX_SECONDS:
        raise FrameError("bad_frame", f"seconds must be 1 to {MAX_SECONDS}", ref)
    if seconds is not None and action not in ("mute", "ban"):
        raise FrameError("bad_frame", "only 'mute' and 'ban' take 'seconds'", ref)
    reason = values.get("reason", "")
    if len(reason) > MAX_REASON_CHARS or not is_storable(reason):
        raise FrameError(
            "bad_frame", f"reason must be at most {MAX_REASON_CHARS} plain characters", ref
        )


def _check_join(values: dict, ref: str | None) -> None:
    single, several = values.get("connection_id"), values.get("connection_ids")
    since, epoch = values.get("since"), values.get("epoch")
    if (single is None) == (several is None):
        raise FrameError(
            "bad_frame", "'join' needs either 'connection_id' or 'connection_ids'", ref
        )
    if single is not None:
        if isinstance(since, dict) or isinstance(epoch, dict):
            raise FrameError(
                "bad_frame", "with 'connection_id', since is a seq and epoch a string", ref
            )
        _check_resume(since, epoch, ref)
        return
    if not 1 <= len(several) <= MAX_JOIN_ROOMS:
        raise FrameError("bad_frame", f"'connection_ids' must list 1 to {MAX_JOIN_ROOMS} rooms")
    if not all(isinstance(c, str) for c in several):
        raise FrameError("bad_frame", "'connection_ids' must be strings")
    values["connection_ids"] = list(dict.fromkeys(several))  # each room once, in order
    for name, value in (("since", since), ("epoch", epoch)):
        if value is not None and not isinstance(value, dict):
            raise FrameError(
                "bad_frame", f"with 'connection_ids', {name} maps connection_id to a value"
            )
        if value and not set(value) <= set(several):
            raise FrameError("bad_frame", f"{name} names a room that is not in 'connection_ids'")
    for cid in values["connection_ids"]:
        room_since, room_epoch = (since or {}).get(cid), (epoch or {}).get(cid)
        if room_since is not None and (
            not isinstance(room_since, int) or isinstance(room_since, bool)
        ):
            raise FrameError("bad_frame", "since must be a seq (0 or more)", cid)
        if room_epoch is not None and not isinstance(room_epoch, str):
            raise FrameError("bad_frame", "epoch must be a string", cid)
        _check_resume(room_since, room_epoch, cid)


def _check_resume(since: int | None, epoch: str | None, ref: str | None) -> None:
    if since is not None and since < 0:
        raise FrameError("bad_frame", "since must be a seq (0 or more)", ref)
    if epoch is not None and len(epoch) > MAX_EPOCH:
        raise FrameError("bad_frame", f"epoch must be at most {MAX_EPOCH} characters", ref)
