"""Request and response shapes of REST API v1, with the limits and examples
that /api/v1/openapi.json publishes (docs/api.md)."""

import json
from datetime import datetime
from typing import Annotated, Literal

from ninja import Field, Schema
from pydantic import field_validator

from chatsvc.core.text import unstorable_in
from chatsvc.core.ulid import ULID_RE

MAX_METADATA_BYTES = 4096
MAX_PAGE = 100
DEFAULT_PAGE = 50
MAX_METADATA_FILTERS = 10
ULID_PATTERN = ULID_RE.pattern
EXAMPLE_ROOM = "01JD7X3K9Q4W6E2R8T5Y1V3N0P"
EXAMPLE_MESSAGE = "01JD7X4A2B3C4D5E6F7G8H9J0K"

ConnectionId = Annotated[
    str,
    Field(
        pattern=ULID_PATTERN,
        min_length=26,
        max_length=26,
        description="A ConnectionId (room id): a ULID, 26 characters of Crockford base32.",
        examples=[EXAMPLE_ROOM],
    ),
]
MessageId = Annotated[
    str,
    Field(
        pattern=ULID_PATTERN,
        min_length=26,
        max_length=26,
        description="A message id: a ULID assigned by the server; ids sort by arrival.",
        examples=[EXAMPLE_MESSAGE],
    ),
]
CURSOR_PATTERN = r"^([0-7][0-9A-HJKMNP-TV-Z]{25})?$"  # a ULID, or "" (= the first page)


def _storable(value):
    # PostgreSQL refuses NUL, SQS control characters and lone surrogates.
    if unstorable_in(value):
        raise ValueError("must not contain control characters or lone surrogates")
    return value


class ConnectionIn(Schema):
    title: str = Field(
        "", max_length=200, description="Shown to nobody but you; at most 200 characters."
    )
    metadata: dict = Field(
        default_factory=dict,
        description=(
            f"Any JSON object of yours (course, section, ...), at most {MAX_METADATA_BYTES} "
            "bytes as JSON. `GET /connections?metadata=key:value` filters on its top-level keys."
        ),
        json_schema_extra={"x-max-bytes": MAX_METADATA_BYTES},
    )

    _plain_text = field_validator("title", "metadata")(_storable)

    @field_validator("metadata")
    @classmethod
    def metadata_small(cls, value: dict) -> dict:
        if len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata must encode to at most {MAX_METADATA_BYTES} bytes")
        return value

    model_config = {
        "json_schema_extra": {
            "examples": [{"title": "Algebra 101", "metadata": {"course_id": "42", "term": "2026"}}]
        }
    }


class ConnectionOut(Schema):
    connection_id: ConnectionId
    title: str = Field(max_length=200)
    status: Literal["open", "closed"] = Field(
        description="`closed` rooms accept no joins and no messages; history stays readable."
    )
    metadata: dict
    created_at: datetime
    closed_at: datetime | None = None

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "connection_id": EXAMPLE_ROOM,
                    "title": "Algebra 101",
                    "status": "open",
                    "metadata": {"course_id": "42"},
                    "created_at": "2026-11-26T10:00:00Z",
                    "closed_at": None,
                }
            ]
        }
    }


class ConnectionsQuery(Schema):
    status: Literal["open", "closed"] | None = Field(None, description="Only rooms in this state.")
    metadata: list[Annotated[str, Field(pattern=r"^[^:]+:", max_length=500)]] = Field(
        default_factory=list,
        max_length=MAX_METADATA_FILTERS,
        description=(
            "`key:value`: only rooms whose metadata has the top-level `key` equal to `value` "
            "(the string, or the number or boolean it spells: `course_id:42` matches 42 and "
            f'"42"). Repeat for several keys (all must match; at most {MAX_METADATA_FILTERS}).'
        ),
    )
    before: str | None = Field(
        None,
        description="A ConnectionId (exclusive): pass the previous page's `next` here.",
        pattern=CURSOR_PATTERN,
    )
    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description="Page size.")

    _plain_text = field_validator("metadata")(_storable)

    def metadata_pairs(self) -> list[tuple[str, str]]:
        return [tuple(item.split(":", 1)) for item in self.metadata]


class ConnectionsOut(Schema):
    connections: list[ConnectionOut] = Field(description="Newest first.")
    next: ConnectionId | None = Field(
        description="Pass as `before` (with the same filters) for the next, older page; "
        "`null` at the end."
    )


class TokenIn(Schema):
    user_id: str = Field(
        min_length=1, max_length=128, description="Your LMS user id (the token's `sub`)."
    )
    name: str = Field(
        "", max_length=200, description="Display name shown to other members; default `user_id`."
    )
    connection_ids: list[str] = Field(
        min_length=1,
        max_length=100,
        description='ConnectionIds of yours this user may join, or `["*"]` for all of them.',
    )
    role: Literal["member", "moderator"] = "member"
    ttl_seconds: int = Field(3600, ge=60, le=86400, description="Token lifetime in seconds.")

    _plain_text = field_validator("user_id", "name", "connection_ids")(_storable)

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "user_id": "u7",
                    "name": "Grace",
                    "connection_ids": [EXAMPLE_ROOM],
                    "role": "member",
                    "ttl_seconds": 3600,
                }
            ]
        }
    }


class HistoryQuery(Schema):
    before: str | None = Field(
        None,
        description="A message id (exclusive): pass the previous page's `next` here.",
        pattern=CURSOR_PATTERN,
    )
    limit: int = Field(DEFAULT_PAGE, ge=1, le=MAX_PAGE, description="Page size.")


class TokenOut(Schema):
    token: str = Field(description="A JWT (HS256) for the WebSocket `auth` frame.")
    expires_at: datetime

    model_config = {
        "json_schema_extra": {
            "examples": [{"token": "eyJhbGciOiJIUzI1NiIs...", "expires_at": "2026-11-26T11:00:00Z"}]
        }
    }


class Sender(Schema):
    id: str
    name: str


class ReactionOut(Schema):
    emoji: str
    count: int = Field(description="Users who reacted with this emoji.")
    user_ids: list[str] = Field(description="The first 25 of them, first reacted first.")


class AttachmentOut(Schema):
    id: str
    name: str
    content_type: str = Field(description="Checked against the uploaded bytes.")
    size: int
    url: str = Field(description="A short-lived download link (see `url_expires_at`).")
    url_expires_at: int = Field(description="Epoch seconds.")


class MessageOut(Schema):
    connection_id: ConnectionId
    id: MessageId
    seq: int | None = Field(
        None, description="The message's place in its room; absent on old messages."
    )
    sender: Sender
    body: str | None = Field(None, description="Absent on deleted messages (tombstones).")
    ts: str = Field(description="ISO 8601 UTC with milliseconds.")
    edited_at: str | None = Field(None, description="When the body was last edited.")
    reactions: list[ReactionOut] | None = None
    attachments: list[AttachmentOut] | None = None
    deleted: bool | None = Field(None, description="`true` on a tombstone: the body is gone.")
    deleted_at: str | None = None
    deleted_by: Sender | None = Field(
        None, description="Who deleted it; `null` on a tombstone: your API did."
    )


class MessagesOut(Schema):
    messages: list[MessageOut] = Field(description="Newest first.")
    next: MessageId | None = Field(
        description="Pass as `before` for the next, older page; `null` at the end."
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "messages": [
                        {
                            "connection_id": EXAMPLE_ROOM,
                            "id": EXAMPLE_MESSAGE,
                            "seq": 42,
                            "sender": {"id": "u7", "name": "Grace"},
                            "body": "hello",
                            "ts": "2026-11-26T10:00:01.123Z",
                        }
                    ],
                    "next": None,
                }
            ]
        }
    }


class ErrorDetail(Schema):
    code: str = Field(description="Stable, machine-readable: see docs/api.md.")
    message: str = Field(description="For humans; may change.")
    details: list[dict] | None = Field(
        None,
        description="422 only: one entry per failed field, "
        '`{"loc": ["body", "metadata"], "msg": "...", "type": "..."}`.',
    )


class ErrorOut(Schema):
    error: ErrorDetail

    model_config = {
        "json_schema_extra": {
            "examples": [{"error": {"code": "not_found", "message": "no such resource"}}]
        }
    }
