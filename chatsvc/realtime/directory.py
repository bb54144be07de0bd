"""What authentication and joins look up, cached in each process.

A reconnect storm (a drain moves every socket of a process to the others)
authenticates and joins thousands of sockets a second. Each lookup used to be
a database query behind a thread hop, and one thread serves a process's
queries: that thread was the limit. Keys (with their tenant and signing
secret), recent user revocations and rooms (with their removals and mutes)
change rarely, so each process keeps what it read for
CHAT_LOOKUP_CACHE_SECONDS and forgets an entry as soon as it changes: every
save or delete of those models publishes `directory.changed` to a group that
every process's RoomHub listens to (`forget` below), and the process that made
the change forgets at once.

Pub/sub is at most once: a process that misses the event (a Redis blip) serves
the old entry until it expires, and the revalidation sweep
(CHAT_REVALIDATE_SECONDS) still re-checks every live socket against the
database. A fill that raced with a change is not kept (`Generation`).
"""

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from chatsvc.core.coalesce import Coalescer
from chatsvc.core.per_loop import PerLoop
from chatsvc.realtime import events
from chatsvc.rooms import selectors
from chatsvc.rooms.models import Room, RoomMute, RoomRemoval, UserRevocation
from chatsvc.tenants.models import Tenant, TenantKey
from chatsvc.tenants.selectors import signing_secret_for

logger = logging.getLogger(__name__)

GROUP = "directory"
MAX_ENTRIES = 50_000  # per kind: rooms, keys, tenants' revocations
MAX_LISTED = 5_000  # a room's removals and mutes, a tenant's recent revocations
# Revocations older than a token's longest life (24 h) plus clock leeway refuse
# no token that is still valid (tokens.py checks the times first).
REVOCATION_HORIZON_SECONDS = 24 * 3600 + 600


class Missing(Exception):
    """Not cached: ask the database (in the database thread)."""


class _Expiring:
    """A bounded map whose entries live `ttl` seconds (least recently used go first)."""

    def __init__(self):
        self.entries: OrderedDict = OrderedDict()  # key -> (expires at, value)

    def get(self, key):
        found = self.entries.get(key)
        if found is None or found[0] < time.monotonic():
            raise Missing(key)
        self.entries.move_to_end(key)
        return found[1]

    def put(self, key, value) -> None:
        self.entries[key] = (time.monotonic() + settings.CHAT_LOOKUP_CACHE_SECONDS, value)
        self.entries.move_to_end(key)
        while len(self.entries) > MAX_ENTRIES:
            self.entries.popitem(last=False)

    def forget(self, key) -> None:
        self.entries.pop(key, None)


@dataclass(frozen=True)
class RoomEntry:
    room: Room
    removed_until: dict[str, float | None]  # user_id -> end of the removal (None: none)
    muted_until: dict[str, float]  # user_id -> end of the mute

    def removes(self, user_id: str, now: float) -> bool:
        if user_id not in self.removed_until:
            return False
        until = self.removed_until[user_id]
        return until is None or until > now

    def mute_of(self, user_id: str, now: float) -> float | None:
        until = self.muted_until.get(user_id)
        return until if until is not None and until > now else None


@dataclass(frozen=True)
class Admission:
    """What a join needs to know: the room (None: no such room for this tenant),
    whether the user is removed from it, and when their mute there ends."""

    room: Room | None
    removed: bool = False
    muted_until: float | None = None


TOO_MANY = "too many"  # a room whose removals or mutes are too many to keep


def _admission(entry, tenant_id: str, user_id: str) -> Admission:
    if entry is None or entry.room.tenant_id != tenant_id:  # another tenant's: not found
        return Admission(None)
    now = time.time()
    return Admission(
        entry.room, removed=entry.removes(user_id, now), muted_until=entry.mute_of(user_id, now)
    )


@dataclass
class Directory:
    keys: _Expiring = field(default_factory=_Expiring)  # kid -> (TenantKey, secret)
    revocations: _Expiring = field(default_factory=_Expiring)  # tenant -> {user: revoked_at}
    # connection_id -> RoomEntry, None (no such room) or TOO_MANY
    rooms: _Expiring = field(default_factory=_Expiring)
    generation: int = 0  # bumped by every change: a fill started before it is dropped

    def forget(self, kind: str, ident: str) -> None:
        self.generation += 1
        if kind == "key":
            self.keys.forget(ident)
        elif kind == "tenant":  # its keys carry the tenant (limits, origins, active)
            self.keys.entries.clear()
        elif kind == "revocations":
            self.revocations.forget(ident)
        elif kind == "room":
            self.rooms.forget(ident)

    def clear(self) -> None:
        self.generation += 1
        for cache in (self.keys, self.revocations, self.rooms):
            cache.entries.clear()


_directory = Directory()


def directory() -> Directory:
    """This process's directory (plain data: shared by its event loop and threads)."""
    return _directory


# --- lookups: from the cache (on the event loop) or the database (in its thread) -------


class Cached:
    """Lookups answered from memory only; Missing when something is not there."""

    def key(self, kid: str) -> tuple[TenantKey | None, str | None]:
        return _directory.keys.get(kid)

    def revoked_at(self, tenant_id: str, user_id: str) -> float | None:
        revoked = _directory.revocations.get(tenant_id)
        if revoked is None:  # too many to keep: ask the database
            raise Missing(tenant_id)
        return revoked.get(user_id)

    def admission(self, tenant_id: str, connection_id: str, user_id: str) -> Admission:
        entry = _directory.rooms.get(connection_id)
        if entry is TOO_MANY:
            raise Missing(connection_id)
        return _admission(entry, tenant_id, user_id)


class Loading:
    """Lookups from the database that fill the cache (sync: the database thread)."""

    def key(self, kid: str) -> tuple[TenantKey | None, str | None]:
        generation = _directory.generation
        key = TenantKey.objects.select_related("tenant").filter(key_id=kid).first()
        found = (key, signing_secret_for(key=key) if key is not None else None)
        if _directory.generation == generation:
            _directory.keys.put(kid, found)
        return found

    def revoked_at(self, tenant_id: str, user_id: str) -> float | None:
        generation = _directory.generation
        since = timezone.now() - timezone.timedelta(seconds=REVOCATION_HORIZON_SECONDS)
        recent = list(
            UserRevocation.objects.filter(tenant_id=tenant_id, revoked_at__gt=since).values_list(
                "user_id", "revoked_at"
            )[: MAX_LISTED + 1]
        )
        revoked = {user: at.timestamp() for user, at in recent}
        if len(recent) > MAX_LISTED:  # keep a marker; each lookup asks the database
            found = UserRevocation.objects.filter(tenant_id=tenant_id, user_id=user_id).first()
            revoked, answer = None, found.revoked_at.timestamp() if found else None
        else:
            answer = revoked.get(user_id)
        if _directory.generation == generation:
            _directory.revocations.put(tenant_id, revoked)
        return answer

    def admission(self, tenant_id: str, connection_id: str, user_id: str) -> Admission:
        entry = self.rooms([connection_id])[connection_id]
        if entry is TOO_MANY:
            return self.crowded_admission(tenant_id, connection_id, user_id)
        return _admission(entry, tenant_id, user_id)

    def crowded_admission(self, tenant_id: str, connection_id: str, user_id: str) -> Admission:
        """For a room with too many removals or mutes to keep: the user's own rows."""
        room = Room.objects.filter(connection_id=connection_id, tenant_id=tenant_id).first()
        if room is None:
            return Admission(None)
        return Admission(
            room,
            removed=selectors.is_removed(connection_id=connection_id, user_id=user_id),
            muted_until=selectors.muted_until(connection_id=connection_id, user_id=user_id),
        )

    def rooms(self, connection_ids: list[str]) -> dict:
        """The rooms' entries (None: no such room), in one set of queries for all."""
        generation = _directory.generation
        rooms = Room.objects.filter(connection_id__in=connection_ids)
        entries = _room_entries(list(rooms))
        found = {connection_id: entries.get(connection_id) for connection_id in connection_ids}
        if _directory.generation == generation:
            for connection_id, entry in found.items():
                _directory.rooms.put(connection_id, entry)
        return found


def _room_entries(rooms: list[Room]) -> dict:
    """connection_id -> RoomEntry (or TOO_MANY) of each room."""
    if len(rooms) <= 1:
        return {room.connection_id: _room_entry(room) for room in rooms}
    by_id = {room.connection_id: room for room in rooms}
    now = timezone.now()
    removals = RoomRemoval.objects.filter(room_id__in=by_id).exclude(until__lte=now)
    mutes = RoomMute.objects.filter(room_id__in=by_id, until__gt=now)
    crowded = {
        room_id
        for listed in (removals, mutes)
        for room_id in listed.values("room_id")
        .annotate(n=Count("pk"))
        .filter(n__gt=MAX_LISTED)
        .values_list("room_id", flat=True)
    }
    removed: dict[str, dict] = {room_id: {} for room_id in by_id}
    for room_id, user_id, until in removals.exclude(room_id__in=crowded).values_list(
        "room_id", "user_id", "until"
    ):
        removed[room_id][user_id] = until.timestamp() if until else None
    muted: dict[str, dict] = {room_id: {} for room_id in by_id}
    for room_id, user_id, until in mutes.exclude(room_id__in=crowded).values_list(
        "room_id", "user_id", "until"
    ):
        muted[room_id][user_id] = until.timestamp()
    return {
        room_id: TOO_MANY
        if room_id in crowded
        else RoomEntry(room=room, removed_until=removed[room_id], muted_until=muted[room_id])
        for room_id, room in by_id.items()
    }


def _room_entry(room: Room):
    now = timezone.now()
    removals = list(
        RoomRemoval.objects.filter(room=room)
        .exclude(until__lte=now)
        .values_list("user_id", "until")[: MAX_LISTED + 1]
    )
    mutes = list(
        RoomMute.objects.filter(room=room, until__gt=now).values_list("user_id", "until")[
            : MAX_LISTED + 1
        ]
    )
    if len(removals) > MAX_LISTED or len(mutes) > MAX_LISTED:
        return TOO_MANY  # every join asks the database
    return RoomEntry(
        room=room,
        removed_until={user: until.timestamp() if until else None for user, until in removals},
        muted_until={user: until.timestamp() for user, until in mutes},
    )


CACHED, LOADING = Cached(), Loading()

# The joins that miss the cache at the same time share one set of queries.
_room_fills = PerLoop(lambda: Coalescer(database_sync_to_async(LOADING.rooms)))


async def admission(tenant_id: str, connection_id: str, user_id: str) -> Admission:
    """Whether the user may join the room: from the cache, else from the database
    together with the other rooms being looked up (core/coalesce.py)."""
    try:
        return CACHED.admission(tenant_id, connection_id, user_id)
    except Missing:
        pass
    entry = await _room_fills.get().get(connection_id)
    if entry is TOO_MANY:
        crowded = database_sync_to_async(LOADING.crowded_admission)
        return await crowded(tenant_id, connection_id, user_id)
    return _admission(entry, tenant_id, user_id)


# --- changes: forget here at once, everywhere once committed ------------------------------


def changed(kind: str, ident: str) -> None:
    _directory.forget(kind, ident)
    transaction.on_commit(lambda: _announce(kind, ident))


def _announce(kind: str, ident: str) -> None:
    _directory.forget(kind, ident)  # what this process read meanwhile was the old row
    try:
        event = {"type": "directory.changed", "kind": kind, "id": ident}
        async_to_sync(events.publish)(GROUP, event)
    except Exception:  # the entry expires (CHAT_LOOKUP_CACHE_SECONDS)
        logger.exception("directory change not published", extra={"kind": kind})


def _on_key(sender, instance: TenantKey, **kwargs) -> None:
    changed("key", instance.key_id)


def _on_tenant(sender, instance: Tenant, **kwargs) -> None:
    changed("tenant", instance.id)


def _on_revocation(sender, instance: UserRevocation, **kwargs) -> None:
    changed("revocations", instance.tenant_id)


def _on_room(sender, instance: Room, **kwargs) -> None:
    changed("room", instance.connection_id)


def _on_room_member(sender, instance: RoomRemoval | RoomMute, **kwargs) -> None:
    changed("room", instance.room_id)


def connect_signals() -> None:
    for model, receiver in (
        (TenantKey, _on_key),
        (Tenant, _on_tenant),
        (UserRevocation, _on_revocation),
        (Room, _on_room),
        (RoomRemoval, _on_room_member),
        (RoomMute, _on_room_member),
    ):
        for signal in (post_save, post_delete):
            signal.connect(receiver, sender=model, dispatch_uid=f"directory-{model.__name__}")
