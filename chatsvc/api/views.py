"""REST API v1 (thin views: services write, selectors read).

Every operation has a summary, a description (its docstring) and a clean
operation id (the view's name in camelCase: `createConnection`), which
generated clients use as method names; docs/api.md is the prose version.
"""

from functools import cache
from typing import Annotated

from django.conf import settings
from ninja import NinjaAPI, Path, Query, Status, Swagger
from ninja.errors import ValidationError

from chatsvc.api import asyncapi, errors
from chatsvc.api.auth import TenantApiKey
from chatsvc.api.membership import tenant_room
from chatsvc.api.schemas import (
    EXAMPLE_ROOM,
    ULID_PATTERN,
    ConnectionIn,
    ConnectionOut,
    ConnectionsOut,
    ConnectionsQuery,
    ErrorOut,
    HistoryQuery,
    MessagesOut,
    TokenIn,
    TokenOut,
)
from chatsvc.messaging.history import read_history_blocking
from chatsvc.realtime import tokens
from chatsvc.rooms import selectors as rooms
from chatsvc.rooms import services as room_services
from chatsvc.rooms.models import Room
from chatsvc.tenants.selectors import current_signing_key

DESCRIPTION = """Rooms (ConnectionIds), user tokens and history for LMS backends.

Authenticate with `Authorization: Bearer <API key>`. Every error has one shape,
`{"error": {"code", "message", "details?"}}`. Users chat over the WebSocket
protocol described by the AsyncAPI document at `/api/v1/asyncapi.json`.
"""


class ChatsvcApi(NinjaAPI):
    def get_openapi_operation_id(self, operation) -> str:
        """`create_connection` -> `createConnection`."""
        first, *rest = operation.view_func.__name__.split("_")
        return first + "".join(word.capitalize() for word in rest)

    def validation_error_from_error_contexts(self, error_contexts) -> ValidationError:
        """Each error's `loc` is where the client put the value: ["body", "metadata"],
        ["query", "metadata", 0]; never the view's parameter names ("payload",
        "query"), which are no part of the API."""
        found = []
        for context in error_contexts:
            model = context.model
            for error in context.pydantic_validation_error.errors(include_url=False):
                loc = (model.__ninja_param_source__, *errors.public_loc(tuple(error["loc"]), model))
                found.append({"loc": loc, "msg": error["msg"], "type": error["type"]})
        return ValidationError(found)

    def get_openapi_schema(self, *args, **kwargs):
        """Path ConnectionIds are ULIDs: said in the schema, not validated (any
        other value is a 404 like a missing room, never a 422)."""
        schema = super().get_openapi_schema(*args, **kwargs)
        for path in schema["paths"].values():
            for operation in path.values():
                for parameter in operation.get("parameters", ()):
                    if parameter["in"] == "path" and parameter["name"] == "connection_id":
                        parameter["schema"].update(pattern=ULID_PATTERN, minLength=26, maxLength=26)
        return schema


api = ChatsvcApi(
    title="chatsvc",
    version="1",
    description=DESCRIPTION,
    urls_namespace="api-v1",
    openapi_url="/openapi.json",
    docs_url="/docs" if settings.CHAT_API_DOCS else None,
    # Swagger UI from django-ninja's static files (no CDN); no validator badge,
    # which would call validator.swagger.io; operation ids shown (client method names).
    docs=Swagger(settings={"validatorUrl": None, "displayOperationId": True}),
    auth=TenantApiKey(),
)
errors.install(api)
ERRORS = {401: ErrorOut, 422: ErrorOut, 429: ErrorOut}
ROOM_ERRORS = {401: ErrorOut, 404: ErrorOut, 429: ErrorOut}  # the path is all there is
RoomId = Annotated[
    str,
    Path(
        description="A ConnectionId of yours (a ULID). Another tenant's room is a 404, "
        "like a missing one.",
        example=EXAMPLE_ROOM,
    ),
]


def _connection(room: Room) -> dict:
    return {
        "connection_id": room.connection_id,
        "title": room.title,
        "status": room.status,
        "metadata": room.metadata,
        "created_at": room.created_at,
        "closed_at": room.closed_at,
    }


@api.post(
    "/connections",
    response={201: ConnectionOut, 413: ErrorOut, **ERRORS},
    tags=["connections"],
    summary="Open a room",
)
def create_connection(request, payload: ConnectionIn):
    """Creates a room (a ConnectionId) for your users to join over WebSocket.
    `metadata` (at most 4 KiB as JSON) is yours: keep course or section ids
    there and find rooms by them with `GET /connections?metadata=key:value`."""
    room = room_services.open_room(
        tenant=request.auth, title=payload.title, metadata=payload.metadata
    )
    return Status(201, _connection(room))


@api.get(
    "/connections",
    response={200: ConnectionsOut, **ERRORS},
    tags=["connections"],
    summary="List your rooms",
)
def list_connections(request, query: Query[ConnectionsQuery]):
    """Your rooms, newest first, a page at a time (`limit` 1-100, default 50).
    `next` is the ConnectionId to pass as `before` for the next, older page
    (with the same filters), or `null` at the end. Filter by `status` and by
    metadata: `?metadata=course_id:42` (repeat it for several keys; all must
    match) matches rooms whose metadata has `course_id` equal to `"42"` or 42."""
    page = rooms.rooms_of_tenant(
        tenant_id=request.auth.id,
        status=query.status,
        metadata=query.metadata_pairs(),
        before=query.before or None,
        limit=query.limit + 1,  # one more tells whether there is a next page
    )
    more = len(page) > query.limit
    page = page[: query.limit]
    return {
        "connections": [_connection(room) for room in page],
        "next": page[-1].connection_id if more else None,
    }


@api.get(
    "/connections/{connection_id}",
    response={200: ConnectionOut, **ROOM_ERRORS},
    tags=["connections"],
    summary="Get a room",
)
def get_connection(request, connection_id: RoomId):
    """One of your rooms. Another tenant's room is a 404, like a missing one."""
    return _connection(tenant_room(request, connection_id))


@api.post(
    "/connections/{connection_id}/close",
    response={200: ConnectionOut, **ROOM_ERRORS},
    tags=["connections"],
    summary="Close a room",
)
def close_connection(request, connection_id: RoomId):
    """Its members get `left {reason: "closed"}` at once; nobody can join or
    send any more. History stays readable. Closing twice is harmless."""
    return _connection(room_services.close_room(room=tenant_room(request, connection_id)))


@api.get(
    "/connections/{connection_id}/messages",
    response={200: MessagesOut, 422: ErrorOut, 503: ErrorOut, **ROOM_ERRORS},
    tags=["connections"],
    summary="Read a room's history",
    exclude_unset=True,  # a message stored before rooms had sequences has no `seq`
)
def list_messages(request, connection_id: RoomId, query: Query[HistoryQuery]):
    """Messages newest first, a page at a time (`limit` 1-100, default 50);
    `next` is the message id to pass as `before` for the next, older page, or
    `null` at the end. Includes messages acknowledged but not yet written by
    the worker; never messages past your retention. 503 `unavailable` when
    the store cannot be read: retry."""
    room = tenant_room(request, connection_id)  # tenant check before DynamoDB is touched
    messages, cursor = read_history_blocking(
        connection_id=room.connection_id, before=query.before or None, limit=query.limit
    )
    return {"messages": messages, "next": cursor}


@api.post(
    "/tokens",
    response={200: TokenOut, 409: ErrorOut, 413: ErrorOut, **ERRORS},
    tags=["tokens"],
    summary="Mint a user token",
)
def mint_token(request, payload: TokenIn):
    """A JWT for one of your users, for the WebSocket `auth` frame: the rooms
    they may join (1-100 of your ConnectionIds, or `["*"]`), their role and
    the token's lifetime (60-86400 s). An unknown room is a 422 naming it;
    409 `no_signing_key` when you have no active key to sign with."""
    tenant = request.auth
    wanted = [cid for cid in payload.connection_ids if cid != tokens.ALL_ROOMS]
    unknown = sorted(
        set(wanted) - rooms.existing_room_ids(tenant_id=tenant.id, connection_ids=wanted)
    )
    if unknown:
        raise errors.ApiError(
            422,
            "invalid_request",
            "unknown connection ids",
            [
                {
                    "loc": ["body", "connection_ids"],
                    "msg": f"no such room: {cid}",
                    "type": "not_found",
                }
                for cid in unknown
            ],
        )
    signing = current_signing_key(tenant=tenant)
    if signing is None:
        raise errors.ApiError(409, "no_signing_key", "the tenant has no usable signing key")
    key, secret = signing
    token, expires_at = tokens.mint(
        key=key,
        signing_secret=secret,
        user_id=payload.user_id,
        name=payload.name or payload.user_id,
        connection_ids=payload.connection_ids,
        role=payload.role,
        ttl_seconds=payload.ttl_seconds,
    )
    return {"token": token, "expires_at": expires_at}


@api.get("/asyncapi.json", auth=None, include_in_schema=False)
def asyncapi_document(request):
    """The WebSocket protocol (docs/protocol.md) as an AsyncAPI 3.0 document."""
    return _asyncapi()


@cache
def _asyncapi() -> dict:
    return asyncapi.document()


api.add_router("", "chatsvc.api.membership.router")  # members, removals, revocations
api.add_router("", "chatsvc.api.moderation.router")  # message deletion, mutes, kicks, bans
api.add_router("", "chatsvc.api.reads.router")  # unread counts
api.add_router("", "chatsvc.api.webhooks.router")  # webhook endpoints, deliveries, replays
