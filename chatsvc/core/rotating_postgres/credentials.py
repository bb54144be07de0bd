"""The process's current database credentials, read from Secrets Manager on demand."""

from __future__ import annotations

import json
import logging
import threading
import time

from django.conf import settings

logger = logging.getLogger(__name__)

# Many threads may be refused at once after a rotation: one read serves them all.
REFRESH_INTERVAL_SECONDS = 5.0

_lock = threading.Lock()
_current: dict[str, str] | None = None  # {"user": ..., "password": ...} once read
_read_at = 0.0


def current() -> dict[str, str] | None:
    """What a new connection should use instead of the settings (None: the settings)."""
    return _current


def refresh() -> dict[str, str] | None:
    """Read the secret again (at most every few seconds); None without a secret."""
    global _current, _read_at
    secret_id = settings.DATABASE_SECRET_ARN
    if not secret_id:
        return None
    with _lock:
        if time.monotonic() - _read_at < REFRESH_INTERVAL_SECONDS:
            return _current
        from chatsvc.aws import clients

        value = clients.client("secretsmanager").get_secret_value(SecretId=secret_id)
        secret = json.loads(value["SecretString"])
        _current = {"user": secret["username"], "password": secret["password"]}
        _read_at = time.monotonic()
        logger.warning(
            "database credentials read again from the secret (version %s)",
            value.get("VersionId", "?"),
        )
        return _current


def forget() -> None:
    """Back to the settings' credentials (tests)."""
    global _current, _read_at
    with _lock:
        _current, _read_at = None, 0.0


def rejected(exc: Exception) -> bool:
    """Did the server refuse these credentials (SQLSTATE class 28), rather than fail?"""
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate.startswith("28"):
        return True
    # A refused connection carries no SQLSTATE in libpq; its message says why.
    message = str(exc)
    return "password authentication failed" in message or (
        "role" in message and "does not exist" in message
    )
