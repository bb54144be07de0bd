"""ULIDs: 26-char Crockford base32, 48-bit millisecond time + 80 random bits.

Ids made in one process are strictly increasing, even within one millisecond
(the random part is incremented), so the order of ids is the order of arrival.
"""

import os
import re
import threading
import time

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
ULID_RE = re.compile(r"^[0-7][0-9A-HJKMNP-TV-Z]{25}$")
_RANDOM_BITS = 80
_RANDOM_MAX = (1 << _RANDOM_BITS) - 1

_lock = threading.Lock()
_last_ms = -1
_last_random = 0


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_ulid() -> str:
    global _last_ms, _last_random
    with _lock:
        now_ms = time.time_ns() // 1_000_000
        if now_ms <= _last_ms:
            now_ms = _last_ms  # clock went backwards or same ms: stay monotonic
            if _last_random == _RANDOM_MAX:
                now_ms += 1
                _last_random = int.from_bytes(os.urandom(10), "big") >> 1
            else:
                _last_random += 1
        else:
            _last_random = int.from_bytes(os.urandom(10), "big") >> 1  # room to increment
        _last_ms = now_ms
        return _encode((now_ms << _RANDOM_BITS) | _last_random)


def is_ulid(value: object) -> bool:
    return isinstance(value, str) and bool(ULID_RE.match(value))


def ulid_time_ms(value: str) -> int:
    """The millisecond timestamp encoded in a ULID."""
    number = 0
    for char in value:
        number = (number << 5) | ALPHABET.index(char)
    return number >> _RANDOM_BITS


def following(last: str, candidate: str) -> str:
    """`candidate` if it sorts after `last`, else the smallest ULID that does.

    Keeps a room's ids in the order its messages were sequenced when two
    processes assigned them in the other order (the Redis stream does the same
    in Lua: chatsvc/streams/scripts/append.lua).
    """
    if candidate > last:
        return candidate
    chars = list(last)
    for i in range(len(chars) - 1, -1, -1):
        position = ALPHABET.index(chars[i])
        if position < len(ALPHABET) - 1:
            chars[i] = ALPHABET[position + 1]
            break
        chars[i] = "0"
    return "".join(chars)
