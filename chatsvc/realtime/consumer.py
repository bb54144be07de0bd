"""The WebSocket endpoint /ws/v1/: one ChatConsumer per socket (docs/protocol.md)."""

import asyncio
import logging
import math
import random
import time
import uuid
import weakref
from collections.abc import Callable
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError
from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from chatsvc.attachments import services as attachments
from chatsvc.core import websocket_protocol
from chatsvc.core.per_loop import PerLoop
from chatsvc.core.ulid import is_ulid, new_ulid
from chatsvc.messaging import content
from chatsvc.messaging.actions import post_message
from chatsvc.messaging.history import read_history
from chatsvc.messaging.producer import EnqueueFailed, QueueBusy
from chatsvc.messaging.queue_message import utc_timestamp
from chatsvc.realtime import (
    admission,
    connection_limits,
    directory,
    events,
    overload,
    presence,
    receipts,
    revocation,
    tokens,
)
from chatsvc.realtime.hub import hub
from chatsvc.realtime.protocol import (
    MAX_CLIENT_ID,
    MESSAGE_TYPES,
    ClientFrame,
    FrameError,
    cost_of,
    decode,
    join_targets,
    kind_of,
    parse_data,
    ref_of,
)
from chatsvc.realtime.ratelimit import Strikes, TokenBucket, control_rate, send_rate
from chatsvc.rooms import moderation
from chatsvc.rooms.models import revokes
from chatsvc.streams import REDIS_OUTAGES, StreamUnavailable
from chatsvc.webhooks import outbox

logger = logging.getLogger(__name__)

CLOSE_TOO_LARGE = 1009
CLOSE_RESTART = 1012
CLOSE_TRY_LATER = 1013
CLOSE_NO_AUTH = 4408
CLOSE_TOO_MANY_SOCKETS = 4409
CLOSE_FLOOD = 4429
FLOOD_STRIKES = 20
FLOOD_WINDOW_SECONDS = 10
TYPING_INTERVAL_SECONDS = 2
# A backend outage (Redis) costs the frame, with a code the client can retry on.
OUTAGES = (StreamUnavailable, *REDIS_OUTAGES)
MAX_CLOSE_REASON_BYTES = 123  # RFC 6455 5.5: a control frame's payload is at most 125 bytes


def close_reason(text: str | None) -> str | None:
    """`text` cut to what a close frame can carry (123 bytes of UTF-8)."""
    if not text:
        return None
    return text.encode()[:MAX_CLOSE_REASON_BYTES].decode(errors="ignore")


async def _authenticate(token) -> tokens.ChatUser:
    """From the process's cache without a thread hop when it holds the key and the
    tenant's revocations (directory.py); from the database otherwise."""
    await hub().listen()  # hear of changes before caching anything
    try:
        return tokens.authenticate(token, directory.CACHED)
    except directory.Missing:
        return await database_sync_to_async(tokens.authenticate)(token, directory.LOADING)


async def _joinable_room(user: tokens.ChatUser, connection_id: str):
    """(the room, when the user's mute there ends), or (None, None): no such room."""
    if not is_ulid(connection_id):
        return None, None
    admission = await directory.admission(user.tenant.id, connection_id, user.id)
    if admission.room is None:
        return None, None
    if admission.removed:
        raise FrameError("removed", "you were removed from this room", connection_id)
    return admission.room, admission.muted_until


async def _announce_membership(user: tokens.ChatUser, connection_id: str, event: str) -> None:
    """member.joined / member.left webhooks (the user's first socket in, last one out)."""
    announced = {
        "id": new_ulid(),
        "type": outbox.MEMBER_JOINED if event == "joined" else outbox.MEMBER_LEFT,
        "tenant_id": user.tenant.id,
        "connection_id": connection_id,
        "occurred_at": utc_timestamp(),
        "data": {"connection_id": connection_id, "user": user.public()},
    }
    try:
        await outbox.arecord([announced])
    except Exception:  # the chat goes on; the webhook is lost (logged)
        logger.exception("membership webhook not recorded", extra={"event": event})


_live: "weakref.WeakSet[ChatConsumer]" = weakref.WeakSet()
# One revalidation sweep per event loop (chatsvc.realtime.revocation).
_sweeps = PerLoop(
    lambda: asyncio.create_task(
        revocation.sweep_forever(_live, settings.CHAT_REVALIDATE_SECONDS), name="revalidate"
    )
)


async def close_all_sockets(
    code: int = CLOSE_RESTART,
    *,
    spread_seconds: float = 0,
    which: Callable[["ChatConsumer"], bool] | None = None,
) -> None:
    """Graceful shutdown: close every socket of this process (or those `which`
    picks), then let sends finish.

    Each socket closes at a random moment within `spread_seconds`, so its
    clients reconnect elsewhere spread out, not all in the same second; until
    then it keeps chatting.
    """
    consumers = [c for c in _live if not c.closed and (which is None or which(c))]

    async def close_later(consumer):
        await asyncio.sleep(random.uniform(0, spread_seconds))  # noqa: S311
        await consumer._close(code)

    await asyncio.gather(*(close_later(consumer) for consumer in consumers))
    pending = [task for consumer in consumers for task in consumer.pending]
    await asyncio.gather(*pending, return_exceptions=True)


def forwarded_port(scope) -> int | None:
    """The load balancer listener's port this socket came through (X-Forwarded-Port)."""
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-port":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def came_through_production(consumer: "ChatConsumer") -> bool:
    """Not through the test listener (a socket without the header counts as production)."""
    return consumer.listener_port != settings.CHAT_TEST_LISTENER_PORT


class ChatConsumer(AsyncWebsocketConsumer):
    # No per-socket channel: the process's RoomHub feeds every socket it holds.
    channel_layer_alias = None
    user: tokens.ChatUser | None = None
    counted_unauthenticated = False
    write_text = None  # the socket's direct text write, on our server (send_text)

    async def dispatch(self, message):
        # Channels' dispatch closes stale DB connections in a worker thread before
        # every handler: a thread hop per incoming frame. Our database access all
        # goes through database_sync_to_async, which does that itself.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message['type']}")
        await handler(message)

    async def connect(self):
        _live.add(self)
        self.socket_id = uuid.uuid4().hex
        self.listener_port = forwarded_port(self.scope)
        self.address = (self.scope.get("client") or ("?", 0))[0]
        self.rooms: set[str] = set()
        self.closed = False
        self.pending: set[asyncio.Task] = set()
        self.last_typing: dict[str, float] = {}
        self.muted: dict[str, float] = {}  # connection_id -> end of the user's mute (epoch s)
        self.reads = receipts.ReadPositions(self)
        self.strikes = Strikes(limit=FLOOD_STRIKES, window_seconds=FLOOD_WINDOW_SECONDS)
        self.bucket: TokenBucket | None = None  # send, typing
        self.control_bucket: TokenBucket | None = None  # every other frame
        loop = asyncio.get_running_loop()
        self.deadline = loop.call_later(settings.CHAT_AUTH_TIMEOUT_SECONDS, self._auth_timed_out)
        await self.accept()
        self.write_text = websocket_protocol.direct_writer(self.base_send)
        waiting = connection_limits.unauthenticated
        if waiting[self.address] >= settings.CHAT_MAX_UNAUTHENTICATED_PER_ADDRESS:
            # too many sockets of this address not signed in
            await self._close(CLOSE_FLOOD, "too many unauthenticated sockets from this address")
            return
        waiting[self.address] += 1
        self.counted_unauthenticated = True

    async def disconnect(self, code):
        _live.discard(self)
        self.closed = True
        self.deadline.cancel()
        self._uncount_unauthenticated()
        if self.user is not None:
            await connection_limits.user_sockets().release(self.user, self.socket_id)
            try:
                await self.reads.flush()
            except Exception:  # a read position is a hint; leaving must go on
                logger.exception("flushing read positions on disconnect failed")
        for connection_id in list(self.rooms):
            try:
                await self._leave_room(connection_id, notify_self=False)
            except Exception:  # one room's failure must not keep the socket in the others
                logger.exception("leaving a room on disconnect failed")
        if self.user is not None:
            await hub().leave(events.tenant_group(self.user.tenant.id), self)

    # --- incoming frames ---------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None):
        if self.closed:
            return
        if self.user is None:
            await self._receive_first(text_data)
            return
        if text_data is None:
            if await self._admit(None):
                await self._error(FrameError("bad_frame", "binary frames are not supported"))
            return
        limit = min(settings.CHAT_MAX_FRAME_BYTES, self.user.tenant.max_frame_bytes)
        if len(text_data.encode()) > limit:
            await self._close(CLOSE_TOO_LARGE, f"frame over {limit} bytes")
            return
        try:
            data, undecodable = decode(text_data), None
        except FrameError as error:
            data, undecodable = None, error
        if not await self._admit(data):
            return
        try:
            if undecodable is not None:
                raise undecodable
            frame = parse_data(data, max_body_chars=settings.CHAT_MAX_BODY_CHARS)
            await self._dispatch(frame)
        except FrameError as error:
            await self._error(error)
        except OUTAGES as exc:
            logger.warning("frame failed: a backend is unavailable", extra={"error": str(exc)})
            ref = ref_of(data)
            await self._error(FrameError("unavailable", "temporarily unavailable; retry", ref))
        except Exception:
            # A bug or an outage must cost this frame, not the socket.
            logger.exception("frame handling failed")
            await self._error(FrameError("internal", "the server could not handle this frame"))

    async def _receive_first(self, text_data: str | None) -> None:
        """Before authentication one frame decides: a valid `auth`, or one error and 4401.

        An unauthenticated socket never gets a second chance to make the
        server work or log (binary, oversized, malformed or failing frames).
        """
        try:
            if text_data is None:
                raise FrameError("bad_frame", "the first frame must be a text auth frame")
            if len(text_data.encode()) > settings.CHAT_MAX_FRAME_BYTES:
                await self._close(CLOSE_TOO_LARGE, "first frame too large")
                return
            data = decode(text_data)
            kind = kind_of(data)
            if kind != "auth":
                got = f", not {kind[:40]!r}" if kind else ""
                raise FrameError("not_authenticated", f"the first frame must be auth{got}")
            frame = parse_data(data, max_body_chars=settings.CHAT_MAX_BODY_CHARS)
            self.deadline.cancel()  # the auth frame came: waiting for a turn is ours
            async with admission.turn():
                await self._auth(frame)
            return
        except FrameError as error:
            await self._reject(tokens.CLOSE_BAD_TOKEN, error, check="first_frame")
            return
        except admission.Busy as busy:
            message = "the server is busy; reconnect later"
            await self._error(FrameError("overloaded", message, retry_after_ms=busy.retry_after_ms))
            code = CLOSE_TRY_LATER
        except OUTAGES as exc:
            logger.warning("auth failed: a backend is unavailable", extra={"error": str(exc)})
            await self._error(FrameError("unavailable", "temporarily unavailable; reconnect"))
            code = CLOSE_TRY_LATER
        except Exception:
            logger.exception("auth frame handling failed")
            await self._error(FrameError("internal", "the server could not handle this frame"))
            code = CLOSE_TRY_LATER
        await self._close(code)

    async def _dispatch(self, frame: ClientFrame) -> None:
        handler = getattr(self, f"on_{frame.type}")
        await handler(frame)

    async def _auth(self, frame: ClientFrame) -> None:
        try:
            user = await _authenticate(frame.token)
        except tokens.TokenRejected as rejected:
            forbidden = rejected.close_code == tokens.CLOSE_FORBIDDEN
            error = FrameError("forbidden" if forbidden else "bad_token", rejected.reason)
            await self._reject(rejected.close_code, error, check=rejected.check, kid=rejected.kid)
            return
        origin = self._origin()
        if not (self._same_origin(origin) or user.tenant.origin_allowed(origin)):
            error = FrameError(
                "forbidden", f"origin {(origin or '')[:60]!r} is not allowed for this tenant"
            )
            await self._reject(tokens.CLOSE_FORBIDDEN, error, check="origin", kid=user.key_id)
            return
        if not await connection_limits.user_sockets().admit(user, self.socket_id):
            limit = user.tenant.max_sockets_per_user
            message = f"at most {limit} sockets per user"
            await self._error(FrameError("too_many_sockets", message))
            await self._close(CLOSE_TOO_MANY_SOCKETS, message)
            return
        self._uncount_unauthenticated()
        self.deadline.cancel()
        self.user = user
        _sweeps.get()
        await hub().join(events.tenant_group(user.tenant.id), self)  # disable/revoke reach us
        rate, burst = send_rate(user.tenant)
        self.bucket = TokenBucket(rate=rate, burst=burst)
        rate, burst = control_rate()
        self.control_bucket = TokenBucket(rate=rate, burst=burst)
        # The session ends when the token does.
        remaining = max(0.0, user.expires_at + tokens.LEEWAY_SECONDS - time.time())
        self.deadline = asyncio.get_running_loop().call_later(
            remaining, self._close_soon, tokens.CLOSE_BAD_TOKEN, "token expired"
        )
        await self._send({"type": "ready", "user": {**user.public(), "role": user.role}})

    async def on_auth(self, frame: ClientFrame) -> None:
        raise FrameError("already_authenticated", "this socket is already authenticated")

    async def on_ping(self, frame: ClientFrame) -> None:
        await self._send({"type": "pong"})

    async def on_join(self, frame: ClientFrame) -> None:
        """One room or several (`connection_ids`): each gets its `joined` or its `error`."""
        targets = join_targets(frame)
        try:
            async with admission.turn():
                await self._join_each(targets)
        except admission.Busy as busy:
            for connection_id, _, _ in targets:
                ref = connection_id[:MAX_CLIENT_ID]
                message = "the server is busy; join again later"
                error = FrameError(
                    "overloaded",
                    message,
                    ref,
                    connection_id=ref,
                    retry_after_ms=busy.retry_after_ms,
                )
                await self._error(error)

    async def _join_each(self, targets) -> None:
        for connection_id, since, epoch in targets:
            ref = connection_id[:MAX_CLIENT_ID]
            try:
                await self._join_room(connection_id, since=since, epoch=epoch)
            except FrameError as error:
                error.connection_id = ref
                await self._error(error)
            except OUTAGES as exc:
                logger.warning("join failed: a backend is unavailable", extra={"error": str(exc)})
                message = "temporarily unavailable; retry"
                await self._error(FrameError("unavailable", message, ref, connection_id=ref))
            except Exception:
                logger.exception("join failed", extra={"connection_id": ref})
                message = "the server could not join this room"
                await self._error(FrameError("internal", message, ref, connection_id=ref))

    async def _join_room(self, connection_id: str, *, since: int | None, epoch: str | None):
        if not is_ulid(connection_id):
            raise FrameError("not_found", "no such room", connection_id[:MAX_CLIENT_ID])
        if connection_id in self.rooms:  # live already: nothing to replay
            feed = hub().feeds[connection_id]
            joined = {"connection_id": connection_id, "seq": feed.seq, "epoch": feed.epoch}
            members = await presence.store().members(connection_id, limit=presence.list_limit())
            await self._send({"type": "joined", **joined, **members.fields()})
            return
        if len(self.rooms) >= settings.CHAT_MAX_ROOMS_PER_SOCKET:
            raise FrameError("too_many_rooms", "leave a room before joining another", connection_id)
        room, muted = (
            await _joinable_room(self.user, connection_id)
            if self.user.may_join(connection_id)
            else (None, None)
        )
        if room is None:
            raise FrameError("not_found", "no such room", connection_id)
        if not room.is_open:
            raise FrameError("room_closed", "the room is closed", connection_id)
        self.rooms.add(connection_id)
        self.on_member_muted(connection_id, self.user.id, muted)
        entered = None
        try:
            await hub().open_room(self, connection_id)  # room events reach us from here
            entered = await presence.enter(self, connection_id)
            extra = entered.members.fields()
            await hub().join_room(self, connection_id, since=since, epoch=epoch, extra=extra)
        except BaseException:
            await self._roll_back_join(connection_id, entered)
            raise
        if connection_id not in self.rooms:
            # Removed, closed or revoked while the join waited (its `left` is sent):
            # take the socket out of the feed the join just put it in.
            await self._leave_room(connection_id, notify_self=False, announce=False)
            return
        if entered.first:  # the user's first socket in the room
            await self._presence(connection_id, "joined")

    async def _roll_back_join(self, connection_id: str, entered) -> None:
        last = await self._leave_room(connection_id, notify_self=False, announce=False)
        if entered is not None and entered.first and not last:
            # Another socket of the user joined meanwhile and, not being the
            # first, announced nothing: the room must still hear of the user.
            await self._presence(connection_id, "joined")

    async def on_leave(self, frame: ClientFrame) -> None:
        self._require_joined(frame.connection_id)
        await self._leave_room(frame.connection_id, notify_self=True)

    async def on_send(self, frame: ClientFrame) -> None:
        self._require_joined(frame.connection_id, ref=frame.client_id)
        self._require_unmuted(frame.connection_id, ref=frame.client_id)
        self._in_background(self._post(frame))  # acks wait for SQS; keep reading frames

    async def on_upload(self, frame: ClientFrame) -> None:
        """A presigned POST for one file; the client sends it with `send {attachments}`."""
        self._require_joined(frame.connection_id, ref=frame.client_id)
        self._require_unmuted(frame.connection_id, ref=frame.client_id)
        self._in_background(self._grant_upload(frame))

    async def _grant_upload(self, frame: ClientFrame) -> None:
        try:
            granted = await attachments.request_upload(
                self.user,
                frame.connection_id,
                name=frame.name,
                content_type=frame.content_type,
                size=frame.size,
            )
        except attachments.AttachmentError as refused:
            await self._error(FrameError(refused.code, refused.message, frame.client_id))
            return
        except Exception:
            logger.exception("granting an upload failed")
            error = FrameError("internal", "the upload could not be granted", frame.client_id)
            await self._error(error)
            return
        reply = {"connection_id": frame.connection_id, "client_id": frame.client_id, **granted}
        await self._send({"type": "upload", **reply})

    async def on_edit(self, frame: ClientFrame) -> None:
        self._require_unmuted(frame.connection_id, ref=frame.client_id)
        self._change(frame, content.edit_message, message_id=frame.message_id, body=frame.body)

    async def on_delete(self, frame: ClientFrame) -> None:
        self._change(frame, content.delete_message, message_id=frame.message_id)

    async def on_react(self, frame: ClientFrame) -> None:
        self._require_unmuted(frame.connection_id, ref=frame.client_id)
        self._change(frame, content.toggle_reaction, message_id=frame.message_id, emoji=frame.emoji)

    async def on_moderate(self, frame: ClientFrame) -> None:
        self._require_joined(frame.connection_id, ref=frame.client_id)
        if self.user.role != "moderator":
            raise FrameError("forbidden", "only moderators can moderate", frame.client_id)
        self._change(
            frame,
            moderation.moderate,
            action=frame.action,
            user_id=frame.user_id,
            seconds=frame.data.get("seconds"),
            reason=frame.data.get("reason", ""),
        )

    async def on_typing(self, frame: ClientFrame) -> None:
        connection_id = frame.connection_id
        self._require_joined(connection_id)
        if self._muted_for(connection_id):
            return  # a muted user's typing shows nowhere
        now = time.monotonic()
        if now - self.last_typing.get(connection_id, 0) < TYPING_INTERVAL_SECONDS:
            return  # coalesced: peers already show this user typing
        self.last_typing[connection_id] = now
        frame = {"type": "typing", "connection_id": connection_id, "user": self.user.public()}
        await events.broadcast(connection_id, frame, exclude=self.socket_id)

    async def on_read(self, frame: ClientFrame) -> None:
        """The user has seen the room up to `seq` (coalesced: chatsvc.realtime.receipts)."""
        self._require_joined(frame.connection_id)
        self.reads.note(frame.connection_id, frame.seq)

    async def on_history(self, frame: ClientFrame) -> None:
        self._require_joined(frame.connection_id)
        try:
            messages, cursor = await read_history(
                connection_id=frame.connection_id,
                before=frame.data.get("before"),
                limit=frame.data.get("limit", 50),
            )
        except (BotoCoreError, ClientError, StreamUnavailable) as exc:
            logger.warning("history unavailable", extra={"error": str(exc)})
            raise FrameError(
                "history_unavailable",
                "history cannot be read right now; retry",
                frame.connection_id,
            ) from exc
        await self._send(
            {
                "type": "history",
                "connection_id": frame.connection_id,
                "messages": messages,
                "next": cursor,
            }
        )

    # --- called by the RoomHub ---------------------------------------------------

    async def send_text(self, text: str) -> None:
        """Write a text frame: once per member per delivery, so past daphne's
        per-message coroutine when the server is ours (websocket_protocol)."""
        if self.closed:
            return
        if self.write_text is not None:
            self.write_text(text)
        else:
            await self.base_send({"type": "websocket.send", "text": text})

    async def on_room_closed(self, connection_id: str) -> None:
        if connection_id in self.rooms:
            await self._leave_room(connection_id, notify_self=False, announce=False)
            await self._send({"type": "left", "connection_id": connection_id, "reason": "closed"})

    async def on_resync(self, connection_id: str) -> None:
        """The server could not repair the room's stream: the client rejoins with `since`."""
        if connection_id in self.rooms:
            await self._leave_room(connection_id, notify_self=False)
            await self._send({"type": "left", "connection_id": connection_id, "reason": "resync"})

    async def on_tenant_disabled(self) -> None:
        await self._close(tokens.CLOSE_FORBIDDEN, "tenant disabled")

    async def on_key_revoked(self, key_id: str) -> None:
        if self.user.key_id == key_id:
            await self._close(tokens.CLOSE_BAD_TOKEN, "key revoked")

    async def on_member_removed(self, connection_id: str, user_id: str) -> None:
        """The tenant removed this user from the room: no rejoin until re-admitted."""
        if connection_id in self.rooms and self.user.id == user_id:
            await self._leave_room(connection_id, notify_self=False)
            await self._send({"type": "left", "connection_id": connection_id, "reason": "removed"})

    def on_member_muted(self, connection_id: str, user_id: str, until: float | None) -> None:
        """A moderator muted (until `until`) or unmuted the user in the room."""
        if self.user.id != user_id:
            return
        if until is None:
            self.muted.pop(connection_id, None)
        else:
            self.muted[connection_id] = until

    async def on_user_revoked(self, user_id: str, revoked_at: float) -> None:
        """The tenant revoked the user's sessions: tokens issued until then are void."""
        if self.user.id == user_id and revokes(revoked_at, self.user.issued_at):
            await self._close(tokens.CLOSE_BAD_TOKEN, "sessions revoked")

    # --- helpers -----------------------------------------------------------------

    async def _post(self, frame: ClientFrame) -> None:
        try:
            posted = await post_message(
                user=self.user,
                connection_id=frame.connection_id,
                client_id=frame.client_id,
                body=frame.body,
                attachment_ids=frame.data.get("attachments"),
            )
        except attachments.AttachmentError as refused:
            error = FrameError(refused.code, refused.message, frame.client_id)
        except QueueBusy:
            error = FrameError("overloaded", "the server is busy; resend later", frame.client_id)
        except EnqueueFailed:
            error = FrameError("not_stored", "not stored yet; resend it", frame.client_id)
        except OUTAGES as exc:
            logger.warning("posting a message failed: Redis unavailable", extra={"error": str(exc)})
            error = FrameError("unavailable", "temporarily unavailable; resend", frame.client_id)
        except Exception:
            logger.exception("posting a message failed")
            error = FrameError("internal", "message not accepted", frame.client_id)
        else:
            ack = {
                "client_id": frame.client_id,
                "id": posted.id,
                "seq": posted.seq,
                "ts": posted.ts,
            }
            await self._send({"type": "ack", **ack})
            return
        await self._error(error)

    def _change(self, frame: ClientFrame, change, **arguments) -> None:
        """Run a content change (edit, delete, react, moderate) in the background;
        `ack` when SQS has it, else an error with the frame's client_id."""
        self._require_joined(frame.connection_id, ref=frame.client_id)
        actor = content.Actor.of_user(self.user)
        self._in_background(
            self._acked(
                frame.client_id,
                change(
                    actor=actor,
                    connection_id=frame.connection_id,
                    client_id=frame.client_id,
                    **arguments,
                ),
            )
        )

    async def _acked(self, client_id: str, change) -> None:
        try:
            done = await change
        except content.ContentError as refused:
            error = FrameError(refused.code, refused.message, client_id)
        except QueueBusy:
            error = FrameError("overloaded", "the server is busy; resend later", client_id)
        except EnqueueFailed:
            error = FrameError("not_stored", "not stored yet; resend it", client_id)
        except OUTAGES as exc:
            logger.warning("a change failed: Redis unavailable", extra={"error": str(exc)})
            error = FrameError("unavailable", "temporarily unavailable; resend", client_id)
        except Exception:
            logger.exception("a change failed")
            error = FrameError("internal", "change not accepted", client_id)
        else:
            ack = {"client_id": client_id, "id": done.id, "seq": done.seq, "ts": done.ts}
            await self._send({"type": "ack", **ack})
            return
        await self._error(error)

    def _muted_for(self, connection_id: str) -> float:
        """Seconds left of the user's mute in the room (0: not muted)."""
        until = self.muted.get(connection_id)
        return max(0.0, until - time.time()) if until is not None else 0.0

    def _require_unmuted(self, connection_id: str, ref: str | None = None) -> None:
        if left := self._muted_for(connection_id):
            raise FrameError(
                "muted", f"you are muted in this room for {math.ceil(left)} more seconds", ref
            )

    async def _leave_room(
        self, connection_id: str, *, notify_self: bool, announce: bool = True
    ) -> bool:
        """Leave the room; True when this was the user's last socket in it."""
        self.rooms.discard(connection_id)
        self.muted.pop(connection_id, None)
        await hub().leave_room(self, connection_id)
        last = await presence.leave(self, connection_id)  # the user's last socket in the room
        if notify_self:
            await self._send({"type": "left", "connection_id": connection_id})
        if announce and last:
            await self._presence(connection_id, "left")
        return last

    async def _presence(self, connection_id: str, event: str) -> None:
        frame = {
            "type": "presence",
            "connection_id": connection_id,
            "user": self.user.public(),
            "event": event,
        }
        await events.broadcast(connection_id, frame, exclude=self.socket_id)
        self._in_background(_announce_membership(self.user, connection_id, event))

    def _require_joined(self, connection_id: str, ref: str | None = None) -> None:
        if connection_id not in self.rooms:
            raise FrameError("not_joined", "join the room first", ref or connection_id)

    def _origin(self) -> str | None:
        for name, value in self.scope.get("headers", []):
            if name == b"origin":
                return value.decode("latin-1")
        return None

    def _same_origin(self, origin: str | None) -> bool:
        """A page chatsvc serves itself (the demo, the LTI chat page inside an LMS's
        iframe) is always allowed: the tenant's origins list the LMS's own pages."""
        if not origin:
            return False
        host = next((v for n, v in self.scope.get("headers", []) if n == b"host"), b"")
        return urlsplit(origin).netloc == host.decode("latin-1")

    async def _send(self, frame: dict) -> None:
        if not self.closed:
            await self.send(text_data=events.encode(frame))

    async def _error(self, error: FrameError) -> None:
        await self._send(error.frame())

    async def _admit(self, data) -> bool:
        """Spend a token from the frame's bucket; when it is empty: an error and a strike.
        While this process is behind delivering, new messages are refused (overload.py)."""
        kind = kind_of(data)
        if kind in MESSAGE_TYPES:
            bucket, what = (
                self.bucket,
                "messages (send, typing, edit, delete, react, moderate, upload)",
            )
        else:
            bucket, what = self.control_bucket, "control frames"
        if bucket.take(cost_of(data)):
            # After the bucket: refusing does not lift the rate limit (and its strikes).
            if kind in overload.SHED_TYPES and (lag := overload.monitor()).overloaded:
                if kind in overload.REFUSED_TYPES:
                    await self._error(lag.refusal(ref_of(data)))
                return False
            return True
        limit = f"{bucket.rate:g}/s, burst {bucket.burst:g}"
        # The ref tells the client which send to retry.
        message = f"too many {what}: at most {limit}; slow down"
        await self._error(FrameError("rate_limited", message, ref_of(data)))
        if self.strikes.add():
            await self._close(CLOSE_FLOOD, "rate limit exceeded repeatedly")
        return False

    async def _reject(
        self, code: int, error: FrameError, *, check: str, kid: str | None = None
    ) -> None:
        """An auth failure: one error frame, one log line, a close with the same reason."""
        await self._error(error)
        logger.info(
            "websocket auth rejected",
            extra={
                "check": check,
                "kid": kid,
                "error_code": error.code,
                "close_code": code,
                "client_address": self.address,
            },
        )
        await self._close(code, error.message)

    def _auth_timed_out(self) -> None:
        seconds = settings.CHAT_AUTH_TIMEOUT_SECONDS
        error = FrameError("not_authenticated", f"no auth frame within {seconds} s")
        self._in_background(self._reject(CLOSE_NO_AUTH, error, check="timeout"))

    async def _close(self, code: int, reason: str | None = None) -> None:
        if not self.closed:
            self.closed = True
            await self.close(code=code, reason=close_reason(reason))

    def _uncount_unauthenticated(self) -> None:
        if self.counted_unauthenticated:
            self.counted_unauthenticated = False
            connection_limits.unauthenticated[self.address] -= 1
            if connection_limits.unauthenticated[self.address] <= 0:
                del connection_limits.unauthenticated[self.address]

    def _close_soon(self, code: int, reason: str | None = None) -> None:
        self._in_background(self._close(code, reason))

    def _in_background(self, coroutine) -> None:
        """Run `coroutine` as a task that shutdown can wait for (self.pending)."""
        task = asyncio.ensure_future(coroutine)
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)
