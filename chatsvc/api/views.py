"""REST API v1 (thin views: services write, selectors read)."""

from django.conf import settings
from django.http import Http404
from ninja import NinjaAPI, Query, Status

from chatsvc.api import errors
from chatsvc.api.auth import TenantApiKey
from chatsvc.api.schemas import (
    ConnectionIn,
    ConnectionOut,
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

api = NinjaAPI(
    title="chatsvc",
    version="1",
    description="Rooms (ConnectionIds), user tokens and history for LMS backends.",
    urls_namespace="api-v1",
    openapi_url="/openapi.json",
    docs_url="/docs" if settings.CHAT_API_DOCS else None,
    auth=TenantApiKey(),
)
errors.install(api)
ERRORS = {401: ErrorOut, 404: ErrorOut, 422: ErrorOut}


def _room(request, connection_id: str) -> Room:
    room = rooms.room_of_tenant(tenant_id=request.auth.id, connection_id=connection_id)
    if room is None:  # another tenant's room is as absent as a missing one
        raise Http404
    return room


def _connection(room: Room) -> dict:
    return {
        "connection_id": room.connection_id,
        "title": room.title,
        "status": room.status,
        "metadata": room.metadata,
        "created_at": room.created_at,
        "closed_at": room.closed_at,
    }


@api.post("/connections", response={201: ConnectionOut, **ERRORS}, tags=["connections"])
def create_connection(request, payload: ConnectionIn):
    room = room_services.open_room(
        tenant=request.auth, title=payload.title, metadata=payload.metadata
    )
    return Status(201, _connection(room))


@api.get(
    "/connections/{connection_id}", response={200: ConnectionOut, **ERRORS}, tags=["connections"]
)
def get_connection(request, connection_id: str):
    return _connection(_room(request, connection_id))


@api.post(
    "/connections/{connection_id}/close",
    response={200: ConnectionOut, **ERRORS},
    tags=["connections"],
)
def close_connection(request, connection_id: str):
    return _connection(room_services.close_room(room=_room(request, connection_id)))


@api.get(
    "/connections/{connection_id}/messages",
    response={200: MessagesOut, 503: ErrorOut, **ERRORS},
    tags=["connections"],
)
def list_messages(request, connection_id: str, query: Query[HistoryQuery]):
    room = _room(request, connection_id)  # tenant check before DynamoDB is touched
    messages, cursor = read_history_blocking(
        connection_id=room.connection_id, before=query.before or None, limit=query.limit
    )
    return {"messages": messages, "next": cursor}


@api.post("/tokens", response={200: TokenOut, 409: ErrorOut, **ERRORS}, tags=["tokens"])
def mint_token(request, payload: TokenIn):
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
