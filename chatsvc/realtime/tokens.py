"""User tokens: HS256 JWTs signed with a tenant's signing secret, `kid` = key id.

Claims: sub, name, cids (room ids or ["*"]), role (member | moderator), iat,
exp (at most 24 h after iat).
"""

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from chatsvc.core.text import is_storable
from chatsvc.realtime import directory
from chatsvc.rooms.models import revokes
from chatsvc.tenants.models import Tenant, TenantKey

ALGORITHM = "HS256"
MAX_LIFETIME_SECONDS = 24 * 3600
LEEWAY_SECONDS = 30
ROLES = ("member", "moderator")
ALL_ROOMS = "*"

CLOSE_BAD_TOKEN = 4401
CLOSE_FORBIDDEN = 4403


class TokenRejected(Exception):
    """The token cannot open a session.

    `reason` says exactly which check failed, for the client (error frame and
    close reason); `check` names it for logs and metrics; `close_code` tells
    the client what to do (4401: a fresh token, 4403: stop). Nothing here
    tells a kid of another tenant from a kid that does not exist.
    """

    def __init__(
        self,
        reason: str,
        close_code: int = CLOSE_BAD_TOKEN,
        *,
        check: str = "invalid",
        kid: str | None = None,
    ):
        super().__init__(reason)
        self.reason = reason
        self.close_code = close_code
        self.check = check
        self.kid = kid


def duration(seconds: float) -> str:
    """A short human duration: 45 s, 12 min 5 s, 3 h 20 min, 2 d 4 h."""
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


@dataclass(frozen=True)
class ChatUser:
    id: str
    name: str
    role: str
    tenant: Tenant
    rooms: frozenset[str] | None  # None: every room of the tenant
    expires_at: int
    key_id: str
    issued_at: int = 0  # iat: a user revocation refuses tokens issued at or before it

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


def authenticate(token: object, lookup=None) -> ChatUser:
    """Verify a token against its tenant key; raise TokenRejected otherwise.

    `lookup` finds keys and revocations: the database (default; sync, it fills
    the process's cache) or the cache alone (directory.CACHED: no I/O, raises
    directory.Missing). The order matters for tenant isolation: nothing about a
    key or its tenant (revoked, disabled) is told before the token's signature
    proved that its sender holds the key's signing secret.
    """
    lookup = lookup or directory.LOADING
    if not isinstance(token, str) or not token:
        raise TokenRejected("auth needs a token (a JWT string)", check="missing")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise TokenRejected(
            "malformed token: not a JWT (header.payload.signature, base64url)", check="malformed"
        ) from exc
    alg, kid = header.get("alg"), header.get("kid")
    if alg != ALGORITHM:
        got = f" (got {alg[:16]!r})" if isinstance(alg, str) else ""
        raise TokenRejected(f"token alg must be HS256{got}", check="alg")
    if kid is None:
        raise TokenRejected("token has no kid header (the tenant key id)", check="no_kid")
    if not isinstance(kid, str) or not kid:
        raise TokenRejected("token kid must be a non-empty string", check="no_kid")
    kid = kid[:64]
    key, secret = lookup.key(kid)
    if key is None:
        raise TokenRejected("unknown kid", check="unknown_kid", kid=kid)
    if secret is None:
        if not key.is_active:  # a revoked key that no longer has its secret: unprovable
            raise TokenRejected("unknown kid", check="unknown_kid", kid=kid)
        raise TokenRejected("this kid cannot be used right now", check="key_unusable", kid=kid)
    claims = _verified_claims(token, secret, kid)
    if not key.is_active:
        raise TokenRejected("revoked key: mint with the current key", check="revoked", kid=kid)
    if not key.tenant.is_active:
        raise TokenRejected("tenant disabled", CLOSE_FORBIDDEN, check="tenant_disabled", kid=kid)
    _check_times(claims, kid)
    try:
        return _user_from_claims(claims, key, lookup)
    except TokenRejected as rejected:
        rejected.kid = kid
        raise


def _verified_claims(token: str, secret: str, kid: str) -> dict:
    """The claims once the signature holds; the times are checked by _check_times."""
    try:
        return jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError as exc:
        raise TokenRejected(
            "bad signature: not signed with this kid's signing secret",
            check="bad_signature",
            kid=kid,
        ) from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenRejected(
            "claim 'aud' is not accepted: leave it out", check="audience", kid=kid
        ) from exc
    except jwt.InvalidTokenError as exc:
        raise TokenRejected(
            f"malformed token: {str(exc)[:80]}", check="malformed", kid=kid
        ) from exc


def _check_times(claims: dict, kid: str) -> None:
    for name in ("sub", "iat", "exp"):
        if name not in claims:
            raise TokenRejected(f"missing claim '{name}'", check="missing_claim", kid=kid)
    iat, exp, nbf = claims["iat"], claims["exp"], claims.get("nbf")
    for name, value in (("iat", iat), ("exp", exp), ("nbf", nbf)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise TokenRejected(
                f"claim '{name}' must be an integer (epoch seconds)", check="bad_claim", kid=kid
            )
    now = int(time.time())
    if now > exp + LEEWAY_SECONDS:
        raise TokenRejected(
            f"token expired {duration(now - exp)} ago (exp {exp}, server time {now}, "
            f"{LEEWAY_SECONDS} s grace)",
            check="expired",
            kid=kid,
        )
    for name, value in (("nbf", nbf), ("iat", iat)):
        if value is not None and value > now + LEEWAY_SECONDS:
            raise TokenRejected(
                f"token not yet valid: {name} is {duration(value - now)} ahead of the server "
                f"clock ({now}, {LEEWAY_SECONDS} s grace)",
                check="not_yet_valid",
                kid=kid,
            )
    if exp - iat > MAX_LIFETIME_SECONDS + LEEWAY_SECONDS:
        raise TokenRejected(
            "token lifetime (exp - iat) exceeds 24 hours", check="lifetime", kid=kid
        )


def _user_from_claims(claims: dict, key: TenantKey, lookup) -> ChatUser:
    sub, name, cids, role = (
        claims.get("sub"),
        claims.get("name", claims.get("sub")),
        claims.get("cids", []),
        claims.get("role", "member"),
    )
    if not isinstance(sub, str) or not 0 < len(sub) <= 128:
        raise TokenRejected("sub must be a string of 1 to 128 characters", check="bad_claim")
    if not isinstance(name, str) or len(name) > 200:
        raise TokenRejected("name must be a string of at most 200 characters", check="bad_claim")
    if not is_storable(sub) or not is_storable(name):
        raise TokenRejected(
            "sub and name must not hold control characters or lone surrogates", check="bad_claim"
        )
    if not isinstance(cids, list) or not all(isinstance(c, str) for c in cids):
        raise TokenRejected("cids must be a list of ConnectionIds", check="bad_claim")
    if role not in ROLES:
        raise TokenRejected("role must be member or moderator", check="bad_claim")
    if revokes(lookup.revoked_at(key.tenant_id, sub), claims["iat"]):
        raise TokenRejected(
            "token revoked: the user's sessions were revoked since; mint a new token",
            check="user_revoked",
        )
    rooms = None if ALL_ROOMS in cids else frozenset(cids)
    exp = claims["exp"]
    return ChatUser(
        id=sub,
        name=name,
        role=role,
        tenant=key.tenant,
        rooms=rooms,
        expires_at=exp,
        key_id=key.key_id,
        issued_at=claims["iat"],
    )
