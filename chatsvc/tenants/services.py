"""Writes on tenants and their keys. Secrets are returned once, never stored in clear."""

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from chatsvc.tenants import secrets
from chatsvc.tenants.models import Tenant, TenantKey


@dataclass(frozen=True)
class IssuedKey:
    """A freshly issued key: the only time its API key and signing secret exist in clear."""

    tenant: Tenant
    key: TenantKey
    api_key: str
    signing_secret: str

    def as_dict(self) -> dict:
        return {
            "tenant_id": self.tenant.id,
            "slug": self.tenant.slug,
            "key_id": self.key.key_id,
            "api_key": self.api_key,
            "signing_secret": self.signing_secret,
        }


def issue_key(*, tenant: Tenant) -> IssuedKey:
    """Add an active key; existing keys stay valid until revoked (rotation overlap)."""
    key_id = secrets.new_key_id()
    api_key = secrets.new_api_key(key_id)
    signing_secret = secrets.new_signing_secret()
    key = TenantKey.objects.create(
        tenant=tenant,
        key_id=key_id,
        api_key_hash=secrets.hash_api_key(api_key),
        signing_secret_encrypted=secrets.encrypt_secret(signing_secret),
    )
    return IssuedKey(tenant=tenant, key=key, api_key=api_key, signing_secret=signing_secret)


@transaction.atomic
def create_tenant(*, slug: str, name: str = "", origins: list[str] | tuple = ()) -> IssuedKey:
    tenant = Tenant(slug=slug, name=name or slug, allowed_origins="\n".join(origins))
    tenant.full_clean()
    tenant.save()
    return issue_key(tenant=tenant)


@transaction.atomic
def rotate_key(*, tenant: Tenant, revoke_others: bool = False) -> IssuedKey:
    issued = issue_key(tenant=tenant)
    if revoke_others:
        for key in tenant.keys.exclude(pk=issued.key.pk).filter(revoked_at=None):
            revoke_key(key=key)
    return issued


def revoke_key(*, key: TenantKey) -> None:
    """Revoke a key; sockets signed in with its tokens are closed at once
    (chatsvc.realtime.revocation, on every save)."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])


def set_active(*, tenant: Tenant, active: bool) -> None:
    """(De)activate a tenant; deactivation closes all its sockets at once
    (chatsvc.realtime.revocation, on every save)."""
    tenant.is_active = active
    tenant.save(update_fields=["is_active"])


def reencrypt_signing_secrets() -> tuple[int, list[str]]:
    """Re-encrypt every stored signing secret under the current SECRET_KEY.

    After it, the old key can leave SECRET_KEY_FALLBACKS without tenants
    rotating their keys. Returns (re-encrypted count, key ids no key can read).
    """
    done, unreadable = 0, []
    for key in TenantKey.objects.iterator():
        rotated = secrets.reencrypt_secret(key.signing_secret_encrypted)
        if rotated is None:
            unreadable.append(key.key_id)
            continue
        key.signing_secret_encrypted = rotated
        key.save(update_fields=["signing_secret_encrypted"])
        done += 1
    return done, unreadable
