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

# type -> {field: (python type, required)}
FIELDS: dict[str, dict[str, tuple[type, bool]]] = {
    "auth": {"token": (str, True)},
    "join": {"connection_id": (str, True), "since": (int, False), "epoch": (str, False)},
    "leave": {"connection_id": (str, True)},
    "send": {"connection_id": (str, True), "client_id": (str, True), "body": (str, True)},
    "typing": {"connection_id": (str, True)},
    "history": {"connection_id": (str, True), "before": (str, False), "limit": (int, False)},
    "ping": {},
}


class FrameError(Exception):
    def __init__(self, code: str, message: str, ref: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref

    def frame(self) -> dict:
        return {"type": "error", "code": self.code, "message": self.message, "ref": self.ref}


@dataclass(frozen=True, slots=True)
class ClientFrame:
    type: str
    data: dict

    def __getattr__(self, name):
        try:
            return self.data[name]
        except KeyError:
            raise AttributeError(name) from None


def _decode(text: str):
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
    data = _decode(text)
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
            raise FrameError("bad_frame", f"'{name}' must be a {expected.__name__}", ref)
        values[name] = value
    _check_values(kind, values, ref, max_body_chars)
    return ClientFrame(kind, values)


def reference_of(text: str) -> str | None:
    """What an error about this raw frame refers to, if it can be told."""
    try:
        data = _decode(text)
    except FrameError:
        return None
    return _ref_of(data) if isinstance(data, dict) else None


def _ref_of(data: dict) -> str | None:
    """What an error refers to: the client_id of a send, else the room."""
    for name in ("client_id", "connection_id"):
        value = data.get(name)
        if isinstance(value, str):
            return value[:MAX_CLIENT_ID]
    return None


def _check_values(kind: str, values: dict, ref: str | None, max_body_chars: int) -> None:
    cid = values.get("connection_id")
    if cid is not None and not is_ulid(cid):
        raise FrameError("not_found", "no such room", ref)
    if kind == "send":
        client_id = values["client_id"]
        if not 0 < len(client_id) <= MAX_CLIENT_ID or not is_storable(client_id):
            raise FrameError(
                "bad_frame", f"client_id must be 1 to {MAX_CLIENT_ID} plain characters", ref
            )
        body = values["body"]
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
    if kind == "join":
        if values.get("since", 0) < 0:
            raise FrameError("bad_frame", "since must be a seq (0 or more)", ref)
        if len(values.get("epoch", "")) > MAX_EPOCH:
            raise FrameError("bad_frame", f"epoch must be at most {MAX_EPOCH} characters", ref)
    if kind == "history":
        limit = values.get("limit", 50)
        if not 1 <= limit <= MAX_HISTORY_LIMIT:
            raise FrameError("bad_frame", f"limit must be 1 to {MAX_HISTORY_LIMIT}", ref)
        before = values.get("before")
        if before is not None and not is_ulid(before):
            raise FrameError("bad_frame", "before must be a message id", ref)
