"""Make what a server says safe to store and show: valid text, bounded, no NUL bytes.

Whatever an SMTP server sends back is untrusted: a Latin-1 error message, a garbled
byte, a NUL, a megabyte of banner. Python decodes such replies with surrogate escapes,
which no database driver can encode (SQLite and psycopg raise, and a batch's log write
fails with them), PostgreSQL text columns refuse NUL bytes, and a page that shows the
text cannot encode it either. So every text that comes from a server passes through
:func:`safe_text` once, where it enters (the reply reader, a failure's text), and again
where it is stored (the model fields of :mod:`django_multismtp.models.fields`), so no
caller can forget it. No Django import: the transport uses it too.
"""

from __future__ import annotations

import re

#: The longest server text kept anywhere (the log row, an account's or a row's last error).
MAX_TEXT = 2000

_TRUNCATED = " [...]"
# C0 controls but tab and line feed, DEL, C1 controls, and lone surrogates (what
# "surrogateescape" decoding leaves for bytes that are not UTF-8).
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def safe_text(value: object, limit: int = MAX_TEXT) -> str:
    """``value`` as valid, printable text of at most ``limit`` characters.

    Bytes are decoded as UTF-8 with replacement characters; undecodable or control
    characters (NUL included) become U+FFFD (carriage returns become line feeds, so a
    multi-line reply keeps its lines); text longer than ``limit`` is cut and marked.
    Idempotent: applying it twice changes nothing.
    """
    if isinstance(value, bytes | bytearray | memoryview):
        text = bytes(value).decode("utf-8", "replace")
    else:
        text = str(value) if value is not None else ""
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _UNSAFE.search(text):
        text = _UNSAFE.sub("\ufffd", text)
    if len(text) > limit:
        text = text[: max(limit - len(_TRUNCATED), 0)] + _TRUNCATED[:limit]
    return text
