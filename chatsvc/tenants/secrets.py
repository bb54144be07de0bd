"""Generating, hashing and encrypting tenant credentials.

API keys are random 256-bit tokens, so a plain SHA-256 is a sound hash (no
password stretching needed). Signing secrets must be recoverable to verify
JWTs, so they are encrypted with a key derived from SECRET_KEY; keys from
SECRET_KEY_FALLBACKS still decrypt, so SECRET_KEY can be rotated.
"""

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

API_KEY_PREFIX = "csk"
KEY_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"


def new_key_id() -> str:
    return "k" + "".join(secrets.choice(KEY_ID_ALPHABET) for _ in range(15))


def new_api_key(key_id: str) -> str:
    return f"{API_KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"


def new_signing_secret() -> str:
    return secrets.token_urlsafe(48)


def key_id_of(api_key: str) -> str | None:
    """The key id embedded in an API key, or None if it is not one of ours."""
    parts = api_key.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or not parts[1] or not parts[2]:
        return None
    return parts[1]


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def api_key_matches(api_key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_api_key(api_key), stored_hash)


def _fernet_for(secret_key: str) -> Fernet:
    digest = hashlib.sha256(b"chatsvc.tenants.signing-secret:" + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _cipher() -> MultiFernet:
    keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return MultiFernet([_fernet_for(key) for key in keys])


def encrypt_secret(plaintext: str) -> str:
    return _cipher().encrypt(plaintext.encode()).decode()


def decrypt_secret(ciphertext: str) -> str | None:
    try:
        return _cipher().decrypt(ciphertext.encode()).decode()
    except InvalidToken:
        return None


def reencrypt_secret(ciphertext: str) -> str | None:
    """The same secret encrypted under the current SECRET_KEY, or None if no key reads it."""
    try:
        return _cipher().rotate(ciphertext.encode()).decode()
    except InvalidToken:
        return None
