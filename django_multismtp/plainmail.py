"""Plain text mail written straight to its wire bytes, without the email package.

Why: rendering is most of a direct send's CPU. Django builds a MIME tree for every
message, then the email package folds each header through its ``Header`` machinery:
about 0.4 ms of CPU for a 2 KB text message on Django 5.2 (a third of what stock Django
spends on the whole send, and more than our transport spends) and about 1.9 ms on 6.0+.
The usual transactional message (one text part, ASCII headers short enough not to fold,
plain addresses, no extra headers) needs none of that machinery: its bytes follow from
a handful of rules.

This module writes those bytes directly, but only for a message whose every part it can
show it writes exactly as Django's own ``message()`` would on this Django line; for
anything else (non-ASCII headers, header lines that would fold, attachments,
alternatives, extra headers, subclasses of Django's classes, lazy strings, another
charset) :func:`render` returns ``None`` and the caller renders through Django as before.
The body may be any text without control characters (5.2: lines up to 998 bytes); on
Django 6.0+ its transfer encoding is chosen by the very function Django's
``set_content()`` calls.
``tests/test_plainmail.py`` renders thousands of generated messages both ways, on every
Django line, and requires the same bytes.

The two styles (``legacy``: Django 5.2's ``SafeMIMEText`` and the ``compat32`` policy;
modern: Django 6.0+'s ``email.message.EmailMessage`` with ``email.policy.SMTP``) differ
in the order of three headers, in how an empty Subject is written, and in the body's
final line break; :mod:`compat` says which one applies and formats the Date.
"""

from __future__ import annotations

import email.contentmanager
import email.policy
import re
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage, EmailMultiAlternatives

from .addresses import PLAIN_ADDRESS

#: Longest header line (name, ": " and value) that neither Django line folds.
MAX_HEADER_LINE = 78
#: Longest body line (in bytes) Django 5.2 sends as it is: above RFC 5322's 998 it
#: switches to quoted-printable, which is left to Django.
MAX_LEGACY_BODY_LINE = 998

#: What email.contentmanager.set_text_content (Django 6.0+'s ``set_content()``) calls to
#: choose and apply the body's transfer encoding; private, so looked up, not imported:
#: a Python without it leaves 6.0+ bodies to Django.
_encode_text: Callable[[str, str, str | None, Any], tuple[str, str]] | None = getattr(
    email.contentmanager, "_encode_text", None
)

# Subject: printable ASCII words separated by single spaces, no encoded-word opener
# ("=?", which the modern parser would decode and re-encode).
_SUBJECT = re.compile(r"(?:[!-~]+(?: [!-~]+)*)?\Z")
# An address both lines write as given: a bare dot-atom address, or a display name of
# letters and digits in single-spaced words before one in angle brackets.
_ADDRESS = re.compile(rf"(?:{PLAIN_ADDRESS}|[A-Za-z0-9]+(?: [A-Za-z0-9]+)* <{PLAIN_ADDRESS}>)\Z")
# A Message-ID as make_msgid() writes one.
_MESSAGE_ID = re.compile(r"<[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+>\Z")
# Body: text without control characters (tabs and line feeds aside; a CR is rewritten by
# both lines), without the Unicode line separators Python's str.splitlines() honours,
# and without lone surrogates.
_BODY = re.compile("[\t\n -~\xa0-\u2027\u202a-\ud7ff\ue000-\U0010ffff]*\\Z")

_CLASSES = (EmailMessage, EmailMultiAlternatives)


def render(
    message: Any,
    from_email: str,
    reply_to: list[str],
    *,
    legacy: bool,
    date: Callable[[], str],
) -> bytes | None:
    """The wire bytes Django would render for ``message`` sent with ``from_email`` and
    ``reply_to`` (an account's sender may replace the caller's), CRLF line endings;
    ``None`` when the message is not one this module can write exactly.

    ``legacy``: Django 5.2's rendering; ``date``: the Date header's value, formatted as
    this Django line formats it.
    """
    if type(message) not in _CLASSES or message.attachments:
        return None
    if getattr(message, "alternatives", None):
        return None
    if message.content_subtype not in ("plain", "html"):
        return None
    if (message.encoding or settings.DEFAULT_CHARSET) != "utf-8":
        return None
    headers = message.extra_headers
    if len(headers) != 1 or "Message-ID" not in headers:
        return None
    message_id = headers["Message-ID"]
    subject, body = message.subject, message.body
    if not (type(subject) is str and type(body) is str and type(from_email) is str):
        return None
    if not (_MESSAGE_ID.match(message_id) and _SUBJECT.match(subject) and "=?" not in subject):
        return None
    lines = [f"Subject: {subject}" if subject or legacy else "Subject:"]
    if not _ADDRESS.match(from_email):
        return None
    lines.append(f"From: {from_email}")
    for name, values in (("To", message.to), ("Cc", message.cc), ("Reply-To", reply_to)):
        if not values:
            continue
        for value in values:
            if type(value) is not str or not _ADDRESS.match(value):
                return None
        lines.append(f"{name}: {', '.join(values)}")
    lines.append(f"Date: {date()}")
    lines.append(f"Message-ID: {message_id}")
    if any(len(line) > MAX_HEADER_LINE for line in lines):
        return None
    # Last: encoding the body is the one step that costs in proportion to the message.
    encoded = _encode_body(body, legacy)
    if encoded is None:
        return None
    transfer_encoding, payload = encoded
    content_type = f'Content-Type: text/{message.content_subtype}; charset="utf-8"'
    cte = f"Content-Transfer-Encoding: {transfer_encoding}"
    if legacy:
        head = [content_type, "MIME-Version: 1.0", cte]
    else:
        head = [content_type, cte, "MIME-Version: 1.0"]
    text = "\r\n".join(head + lines) + "\r\n\r\n"
    return text.encode("ascii") + payload.replace(b"\n", b"\r\n")


def _encode_body(body: str, legacy: bool) -> tuple[str, bytes] | None:
    """The body's transfer encoding and bytes (LF line ends) as this Django line writes
    them, or None."""
    if not _BODY.match(body):
        return None
    data = body.encode("utf-8")
    if legacy:
        # SafeMIMEText: 7bit or 8bit as the text is, no line break added; quoted-printable
        # (not written here) when a line is longer than 998 bytes.
        if max(map(len, data.split(b"\n"))) > MAX_LEGACY_BODY_LINE:
            return None
        return ("7bit" if body.isascii() else "8bit"), data
    if _encode_text is None:  # pragma: no cover
        return None
    transfer_encoding, text = _encode_text(body, "utf-8", None, email.policy.SMTP)
    return transfer_encoding, text.encode("ascii", "surrogateescape")
