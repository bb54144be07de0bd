"""Signing deliveries: `Chatsvc-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>`.

The HMAC key is the endpoint's secret (its UTF-8 bytes), the message is
`<t>.<body>`: the timestamp, a dot and the exact body bytes. While a rotated
secret's predecessor is still valid, a second `v1=` signs with it.
"""

import hashlib
import hmac
import secrets as _secrets

SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret


def new_secret() -> str:
    return SECRET_PREFIX + _secrets.token_urlsafe(32)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def header(secrets: list[str], timestamp: int, body: bytes) -> str:
    return ",".join(
        [f"t={timestamp}", *(f"v1={signature(secret, timestamp, body)}" for secret in secrets)]
    )
