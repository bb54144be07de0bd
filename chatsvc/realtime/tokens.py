"""User tokens: HS256 JWTs signed with a tenant's signing secret, `kid` = key id.

Claims: sub, name, cids (room ids or ["*"]), role (member | moderator), iat,
exp (at most 24 h after iat).
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from chatsvc.core.text import is_storable
from chatsvc.tenants.models import Tenant, TenantKey
from chatsvc.tenants.selectors import signing_secret_for

ALGORITHM = "HS256"
MAX_LIFETIME_SECONDS = 24 * 3600
LEEWAY_SECONDS = 30
ROLES = ("member", "moderator")
ALL_ROOMS = "*"

CLOSE_BAD_TOKEN = 4401
CLOSE_FORBIDDEN = 4403


class TokenRejected(Exception):
    """The token cannot open a session; `close_code` tells the client why."""

    def __init__(self, reason: str, close_code: int = CLOSE_BAD_TOKEN):
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code


@dataclass(frozen=True)
class ChatUser:
    id: str
    name: str
    role: str
    tenant: Tenant
    rooms: frozenset[str] | None  # None: every room of the tenant
    expires_at: int
    key_id: str

    def may_join(self, connection_id: str) -> bool:
        return self.rooms is None or connection_id in self.rooms

    def public(self) -> dict:
        return {"id": self.id, "name": self.name}


def mint(
    *,
    key: TenantKey,
    signing_secret: str,
    user_id: str,
    name: str,
    connection_ids: list[str],
    role: str = "member",
    ttl_seconds: int = 3600,
) -> tuple[str, datetime]:
    now = datetime.now(UTC).replace(microsecond=0)
    expires_at = now + timedelta(seconds=min(ttl_seconds, MAX_LIFETIME_SECONDS))
    claims = {
        "sub": user_id,
        "name": name,
        "cids": connection_ids,
        "role": role,
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
    }
    token = jwt.encode(claims, signing_secret, algorithm=ALGORITHM, headers={"kid": key.key_id})
    return token, expires_at


def authenticate(token: object) -> ChatUser:
    """Verify a token against its tenant key; raise TokenRejected otherwise. Sync (DB)."""
    if not isinstance(token, str) or not token:
        raise TokenRejected("token missing")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise TokenRejected("token malformed") from exc
    kid = header.get("kid")
    if header.get("alg") != ALGORITHM or not isinstance(kid, str):
        raise TokenRejected("token must be HS256 with a kid header")
    key = TenantKey.objects.select_related("tenant").filter(key_id=kid).first()
    if key is None or not key.is_active:
        raise TokenRejected("unknown or revoked key")
    secret = signing_secret_for(key=key)
    if secret is None:
        raise TokenRejected("key cannot be used")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": ["exp", "iat", "sub"]},
            leeway=LEEWAY_SECONDS,
        )
    except jwt.ExpiredSignatureError as exc:
        raise TokenRejected("token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenRejected(f"token invalid: {exc}") from exc
    user = _user_from_claims(claims, key)
    if not key.tenant.is_active:
        raise TokenRejected("tenant disabled", CLOSE_FORBIDDEN)
    return user


def _user_from_claims(claims: dict, key: TenantKey) -> ChatUser:
    sub, name, cids, role = (
        claims.get("sub"),
        claims.get("name", claims.get("sub")),
        claims.get("cids", []),
        claims.get("role", "member"),
    )
    iat, exp = claims["iat"], claims["exp"]
    if not isinstance(sub, str) or not 0 < len(sub) <= 128:
        raise TokenRejected("sub must be a string of 1 to 128 characters")
    if not isinstance(name, str) or len(name) > 200:
        raise TokenRejected("name must be a string of at most 200 characters")
    if not is_storable(sub) or not is_storable(name):
        raise TokenRejected("sub and name must not hold control characters or lone surrogates")
    if not isinstance(cids, list) or not all(isinstance(c, str) for c in cids):
        raise TokenRejected("cids must be a list of ConnectionIds")
    if role not in ROLES:
        raise TokenRejected("role must be member or moderator")
    if not isinstance(iat, int) or not isinstance(exp, int):
        raise TokenRejected("iat and exp must be integers")
    if exp - iat > MAX_LIFETIME_SECONDS + LEEWAY_SECONDS:
        raise TokenRejected("token lifetime exceeds 24 hours")
    rooms = None if ALL_ROOMS in cids else frozenset(cids)
    return ChatUser(
        id=sub,
        name=name,
        role=role,
        tenant=key.tenant,
        rooms=rooms,
        expires_at=exp,
        key_id=key.key_id,
    )
