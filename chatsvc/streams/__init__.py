"""Room streams: each room's sequence, replay log and live feed.

Every message posted to a room gets the room's next `seq` (dense within an
`epoch`), goes into a bounded replay log and is published to the room's
subscribers, in one atomic step. Readers ask for the `tail` after a seq they
have (resume, gap repair) or for `recent` entries (history not yet in
DynamoDB). Redis-backed when REDIS_URL is set (shared by every web process),
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

    def on_subscribed(self, connection_id: str) -> None:
        """The subscription is (again) in place: anything published before may be missing."""


def new_epoch() -> str:
    return secrets.token_hex(6)


def sent_key(*, tenant_id: str, connection_id: str, sender_id: str, client_id: str) -> str:
    """The key of one sender's client_id: unambiguous whatever the ids contain."""
    raw = json.dumps([tenant_id, connection_id, sender_id, client_id], ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


def parse_entry(raw: str) -> Entry:
    """A log entry "<ms>|<seq>|<id>|<frame>"."""
    _, seq, message_id, frame = raw.split("|", 3)
    return Entry(int(seq), message_id, frame)
