"""Text every store accepts: what may reach SQS, DynamoDB and PostgreSQL.

SQS accepts only #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD #x10000-#x10FFFF in a
message (so no NUL, which PostgreSQL refuses too, no other control
characters and no lone surrogates, which JSON's "\\ud800" can smuggle into a
Python str and which no UTF-8 encoder accepts).
"""

import re
import unicodedata

_NOT_STORABLE = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def is_storable(text: str) -> bool:
    return _NOT_STORABLE.search(text) is None


def unstorable_in(value) -> bool:
    """Whether a JSON-like value holds a string (key or value) that is not storable."""
    if isinstance(value, str):
        return not is_storable(value)
    if isinstance(value, dict):
        return any(unstorable_in(key) or unstorable_in(item) for key, item in value.items())
    if isinstance(value, list):
        return any(unstorable_in(item) for item in value)
    return False


# Letters and symbols that render as nothing (fillers); format characters
# (category Cf: zero-width space and joiners, word joiner, BOM, bidi marks)
# and white space are invisible too.
_BLANK_GLYPHS = frozenset("\u115f\u1160\u2800\u3164\uffa0")


def is_blank(text: str) -> bool:
    """Whether `text` would show as nothing at all."""
    return all(
        char.isspace() or char in _BLANK_GLYPHS or unicodedata.category(char) == "Cf"
        for char in text
    )
