"""Reads used to authenticate tenants (API keys) and their users (JWT kid)."""

from chatsvc.tenants import secrets
from chatsvc.tenants.models import Tenant, TenantKey


def active_key(*, key_id: str) -> TenantKey | None:
    """An unrevoked key of an active tenant, with its tenant loaded."""
    return (
        TenantKey.objects.select_related("tenant")
        .filter(key_id=key_id, revoked_at=None, tenant__is_active=True)
        .first()
    )


def tenant_for_api_key(*, api_key: str) -> Tenant | None:
    key_id = secrets.key_id_of(api_key)
    if key_id is None:
        return None
    key = active_key(key_id=key_id)
    if key is None or not secrets.api_key_matches(api_key, key.api_key_hash):
        return None
    return key.tenant


def signing_secret_for(*, key: TenantKey) -> str | None:
    return secrets.decrypt_secret(key.signing_secret_encrypted)


def current_signing_key(*, tenant: Tenant) -> tuple[TenantKey, str] | None:
    """The newest active key and its signing secret: what new tokens are signed with."""
    key = tenant.keys.filter(revoked_at=None).order_by("-created_at").first()
    secret = signing_secret_for(key=key) if key else None
    return (key, secret) if secret else None
