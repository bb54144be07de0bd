import json
from datetime import datetime
from typing import Literal

from ninja import Field, Schema
from pydantic import field_validator

from chatsvc.core.text import unstorable_in

MAX_METADATA_BYTES = 4096


def _storable(value):
    # PostgreSQL refuses NUL, SQS control characters and lone surrogates.
    if unstorable_in(value):
        raise ValueError("must not contain control characters or lone surrogates")
    return value


class ConnectionIn(Schema):
    title: str = Field("", max_length=200)
    metadata: dict = Field(default_factory=dict)

    _plain_text = field_validator("title", "metadata")(_storable)

    @field_validator("metadata")
    @classmethod
    def metadata_small(cls, value: dict) -> dict:
        if len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"metadata must encode to at most {MAX_METADATA_BYTES} bytes")
        return value


class ConnectionOut(Schema):
    connection_id: str
    title: str
    status: Literal["open", "closed"]
    metadata: dict
    created_at: datetime
    closed_at: datetime | None = None


class TokenIn(Schema):
    user_id: str = Field(min_length=1, max_length=128)
    name: str = Field("", max_length=200)
    connection_ids: list[str] = Field(min_length=1, max_length=100)
    role: Literal["member", "moderator"] = "member"
    ttl_seconds: int = Field(3600, ge=60, le=86400)

    _plain_text = field_validator("user_id", "name", "connection_ids")(_storable)


class HistoryQuery(Schema):
    before: str | None = Field(None, pattern=r"^([0-7][0-9A-HJKMNP-TV-Z]{25})?$")  # "" = newest
    limit: int = Field(50, ge=1, le=100)


class TokenOut(Schema):
    token: str
    expires_at: datetime


class Sender(Schema):
    id: str
    name: str


class MessageOut(Schema):
    connection_id: str
    id: str
    sender: Sender
    body: str
    ts: str


class MessagesOut(Schema):
    messages: list[MessageOut]
    next: str | None


class ErrorDetail(Schema):
    code: str
    message: str
    details: list[dict] | None = None


class ErrorOut(Schema):
    error: ErrorDetail
