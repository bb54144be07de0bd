"""Pure helpers: names, keys, Content-Disposition, content types and sniffing.

No I/O here; chatsvc.attachments.services does the storage and the database.
"""

import re
import unicodedata
from urllib.parse import quote

import filetype

from chatsvc.core.text import is_blank, is_storable

MAX_NAME_CHARS = 255
KEY_NAME_CHARS = 100  # the sanitized name in the object key
# Bytes read from the start of an upload to tell its real type: filetype looks at
# most at 8 KiB; text is checked over the same window.
SNIFF_BYTES = 8192

# Spellings some clients use for the same type.
TYPE_ALIASES = {
    "image/jpg": "image/jpeg",
    "image/pjpeg": "image/jpeg",
    "image/x-png": "image/png",
    "application/x-pdf": "application/pdf",
}
_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
# RFC 5987 attr-char: what filename*= may carry unencoded.
_ATTR_CHARS = "!#$&+-.^_`|~"


class BadName(ValueError):
    pass


def normalize_type(content_type: str) -> str:
    """Lower case, parameters (;charset=...) dropped, aliases folded."""
    base = content_type.split(";", 1)[0].strip().lower()
    return TYPE_ALIASES.get(base, base)


def is_content_type(value: str) -> bool:
    return bool(_TYPE_RE.match(value))


def check_name(name: object) -> str:
    """The display name as given, or BadName saying why it cannot be one."""
    if not isinstance(name, str) or not name:
        raise BadName("name must be a non-empty string")
    if len(name) > MAX_NAME_CHARS:
        raise BadName(f"name must be at most {MAX_NAME_CHARS} characters")
    if not is_storable(name) or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise BadName("name must not hold control characters or lone surrogates")
    if is_blank(name):
        raise BadName("name must not be blank")
    return name


def key_name(name: str) -> str:
    """A safe object-key segment for `name`: ASCII letters, digits, `.`, `_`, `-`."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    cleaned = _UNSAFE_KEY_CHARS.sub("_", ascii_name).strip("._-")
    if not cleaned:
        return "file"
    if len(cleaned) > KEY_NAME_CHARS:
        stem, dot, extension = cleaned.rpartition(".")
        if dot and 0 < len(extension) <= 16:
            cleaned = stem[: KEY_NAME_CHARS - len(extension) - 1] + "." + extension
        else:
            cleaned = cleaned[:KEY_NAME_CHARS]
    return cleaned


def object_key(*, tenant_id: str, connection_id: str, attachment_id: str, name: str) -> str:
    return f"tenants/{tenant_id}/rooms/{connection_id}/{attachment_id}/{key_name(name)}"


def room_prefix(*, tenant_id: str, connection_id: str) -> str:
    return f"tenants/{tenant_id}/rooms/{connection_id}/"


def content_disposition(name: str) -> str:
    """`attachment` with the original name, RFC 6266: an ASCII fallback and filename*."""
    fallback = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    fallback = "".join("_" if c in '"\\' or not 0x20 <= ord(c) < 0x7F else c for c in fallback)
    fallback = fallback.strip() or "file"
    encoded = quote(name, safe=_ATTR_CHARS)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


def served_type(content_type: str) -> str:
    """The Content-Type a download is served with: text gets its charset."""
    return f"{content_type}; charset=utf-8" if content_type.startswith("text/") else content_type


def is_text(head: bytes, *, complete: bool) -> bool:
    """Our rule for text/*: valid UTF-8 without NUL. When `head` is only the start
    of the file, a multi-byte character cut at its end is allowed."""
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Cut at the end of the window (at most 3 bytes of one character): fine.
        return not complete and exc.reason == "unexpected end of data"
    return True


def detect(head: bytes, *, declared: str, complete: bool) -> str | None:
    """The real type of the bytes, as far as it decides `declared` (normalized).

    Declared text/* : the text rule decides (valid UTF-8, no NUL), not the
    sniffer, whose weakest signatures (BMP's "BM") match ordinary text; served
    as an attachment with a text type, text is harmless whatever it says.
    Otherwise the sniffer's signature (None when it knows none).
    """
    if declared.startswith("text/"):
        if is_text(head, complete=complete):
            return declared
        kind = filetype.guess_mime(head)
        return normalize_type(kind) if kind else "application/octet-stream"
    kind = filetype.guess_mime(head)
    return normalize_type(kind) if kind else None
