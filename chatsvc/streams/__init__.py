"""Room streams: each room's sequence, replay log and live feed.

Every message posted to a room gets the room's next `seq` (dense within an
`epoch`), goes into a bounded replay log and is published to the room's
subscribers, in one atomic step. Readers ask for the `tail` after a seq they
have (resume, gap repair) or for `recent` entries (history not yet in
DynamoDB). A room's subscribers also hear its unsequenced events (typing,
presence, moderation: `publish_event`), at most once, on the same
subscription. Redis-backed when REDIS_URL is set (shared by every web process),
in-process otherwise. docs/architecture.md explains the design and what
happens when Redis fails.
"""

import hashlib
import json
import secrets
from dataclasses import dataclass
from typing import Protocol

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# What a Redis outage raises: a lost or refused connection, a timeout.
REDIS_OUTAGES = (RedisConnectionError, RedisTimeoutError, OSError)


class StreamUnavailable(Exception):
    """The stream's store cannot be reached; nothing was changed."""


class RecordChanged(Exception):
    """A change was refused: the message's record is missing (no seed given) or
    no longer at the version the change was computed from. Nothing was changed."""


@dataclass(frozen=True, slots=True)
class Entry:
    seq: int
    id: str
    frame: str  # the `message` frame, JSON-encoded


@dataclass(frozen=True, slots=True)
class Appended:
    new: bool  # False: the client_id was claimed before, this is its first message
    acked: bool  # SQS accepted this message already
    seq: int
    frame: str
    state: str = ""  # a content event's state for the worker (JSON), kept for resends


@dataclass(frozen=True, slots=True)
class Change:
    """An event that changes one message's record, for `apply`.

    The event frame is `head` + `"id":…,"seq":…` + `tail`, like a message's.
    `fields` maps record fields to new string values (False deletes one);
    `seq_fields` are set to the event's seq. It applies only while the record
    is at `version`; a missing record is created from `seed` (version 0)
    first. `state` (what the worker persists) is kept with the client_id, so a
    resend queues exactly it again.
    """

    connection_id: str
    message_id: str
    sent_key: str  # the actor's client_id for this change: resends map to the first
    event_id: str
    head: str
    tail: str
    version: str
    seed: dict | None
    fields: dict
    seq_fields: tuple[str, ...] = ()
    state: dict | None = None


@dataclass(frozen=True, slots=True)
class Reaction:
    """A user's reaction toggle, for `react`: applied atomically, so concurrent
    reactions never conflict. The frame is `head` + `"id":…,"seq":…` + `tail`
    + `,"added":…,"reactions":[…]}`."""

    connection_id: str
    message_id: str
    sent_key: str
    event_id: str
    head: str
    tail: str  # without its closing brace
    seed: dict | None
    emoji: str
    user_id: str
    max_kinds: int
    max_reactions: int
    shown: int  # user ids per emoji in the frame
    expires_at: int | None = None  # the message's, for the worker's state (kept for resends)


@dataclass(frozen=True, slots=True)
class Reacted:
    appended: Appended
    reactions: list[dict] | None  # the message's reactions after it (None for a resend)


class Refused(Exception):
    """The change breaks a rule the stream checks atomically; `code` says which
    (message_deleted, too_many_kinds, too_many_reactions)."""

    def __init__(self, code: str):
        super().__init__(code)
        self.code = code


@dataclass(frozen=True, slots=True)
class ReadMark:
    """A user's read position in a room: `count` of the room's messages are at or
    before `seq` (in `epoch`)."""

    moved: bool  # False: the position was there already (or further)
    epoch: str
    seq: int
    count: int


@dataclass(frozen=True, slots=True)
class Unread:
    connection_id: str
    unread: int  # messages after the user's read position (all, without one)
    last_read_seq: int | None


@dataclass(frozen=True, slots=True)
class Tail:
    epoch: str
    seq: int  # the room's last seq
    entries: list[Entry] | None  # after `since`, or None when the log no longer holds them


@dataclass(frozen=True, slots=True)
class Window:
    """How much of each room the replay log keeps (docs/configuration.md)."""

    keep_messages: int  # at least the last N messages ...
    keep_seconds: int  # ... or everything from the last S seconds, whichever is more,
    max_messages: int  # ... but never more than this.
    sent_ttl_seconds: int  # how long a client_id maps to its message


class Listener(Protocol):
    async def on_frame(self, connection_id: str, seq: int, frame: str) -> None:
        """A message arrived on a subscribed room (in seq order, unless one was lost)."""

    async def on_event(self, connection_id: str, payload: str) -> None:
        """An event published to a subscribed room (publish_event): unsequenced, at most once."""

    def on_subscribed(self, connection_id: str) -> None:
        """The subscription is (again) in place: anything published before may be missing."""


def new_epoch() -> str:
    return secrets.token_hex(6)


def sent_key(*, tenant_id: str, connection_id: str, sender_id: str, client_id: str) -> str:
    """The key of one sender's client_id: unambiguous whatever the ids contain."""
    raw = json.dumps([tenant_id, connection_id, sender_id, client_id], ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


def unread_of(connection_id: str, *, epoch: str | None, messages: int, mark: str | None) -> Unread:
    """Unread messages from the room's state (`epoch`, `messages` so far) and the user's
    read position ("epoch|seq|count", or None: never read, so everything is unread).
    A position of another epoch (the room's state was lost since) counts as none."""
    if mark is not None:
        mark_epoch, seq, count = mark.split("|")
        if mark_epoch == epoch:
            return Unread(connection_id, max(0, messages - int(count)), int(seq))
    return Unread(connection_id, messages, None)


def parse_entry(raw: str) -> Entry:
    """A log entry "<ms>|<seq>|<id>|<frame>"."""
    _, seq, message_id, frame = raw.split("|", 3)
    return Entry(int(seq), message_id, frame)
