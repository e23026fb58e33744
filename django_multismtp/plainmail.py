"""Plain text mail written straight to its wire bytes, without the email package.

Why: rendering is most of a direct send's CPU. Django builds a MIME tree for every
message, then the email package folds each header through its ``Header`` machinery:
about 0.36 ms for a short text message, a third of what stock Django spends on the
whole send, and more than our transport spends. The usual transactional message (one
text part, ASCII, header lines short enough not to fold, plain addresses, no extra
headers) needs none of that machinery: its bytes follow from a handful of rules.

This module writes those bytes directly, but only for a message whose every part it can
show it writes exactly as Django's own ``message()`` would on this Django line; for
anything else (non-ASCII, header lines that would fold, body lines that would need
quoted-printable, attachments, alternatives, extra headers, subclasses of Django's
classes, lazy strings, another charset) :func:`render` returns ``None`` and the caller
renders through Django as before. ``tests/test_plainmail.py`` renders thousands of
generated messages both ways, on every Django line, and requires the same bytes.

The two styles (``legacy``: Django 5.2's ``SafeMIMEText`` and the ``compat32`` policy;
modern: Django 6.0+'s ``email.message.EmailMessage`` with ``email.policy.SMTP``) differ
in the order of three headers, in how an empty Subject is written, and in the body's
final line break; :mod:`compat` says which one applies and formats the Date.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage, EmailMultiAlternatives

#: Longest header line (name, ": " and value) that neither Django line folds.
MAX_HEADER_LINE = 78
#: Longest body line each style sends as 7bit: Django 5.2 switches to quoted-printable
#: above RFC 5322's 998; 6.0+ lets the email package choose above the policy's 78.
MAX_BODY_LINE = {True: 998, False: 78}

# Subject: printable ASCII words separated by single spaces, no encoded-word opener
# ("=?", which the modern parser would decode and re-encode).
_SUBJECT = re.compile(r"(?:[!-~]+(?: [!-~]+)*)?\Z")
# An address both lines write as given: a bare dot-atom address, or a display name of
# letters and digits in single-spaced words before one in angle brackets.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SPEC = rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_ADDRESS = re.compile(rf"(?:{_SPEC}|[A-Za-z0-9]+(?: [A-Za-z0-9]+)* <{_SPEC}>)\Z")
# A Message-ID as make_msgid() writes one.
_MESSAGE_ID = re.compile(r"<[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+>\Z")
# Body: printable ASCII, tabs and line feeds only (no CR: both lines rewrite lone CRs).
_BODY = re.compile(r"[\t\n -~]*\Z")

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
    if not _BODY.match(body) or max(map(len, body.split("\n"))) > MAX_BODY_LINE[legacy]:
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
    content_type = f'Content-Type: text/{message.content_subtype}; charset="utf-8"'
    if legacy:
        head = [content_type, "MIME-Version: 1.0", "Content-Transfer-Encoding: 7bit"]
    else:
        head = [content_type, "Content-Transfer-Encoding: 7bit", "MIME-Version: 1.0"]
        if not body.endswith("\n"):
            body += "\n"  # the email package ends a 7bit text part with a line break
    text = "\r\n".join(head + lines) + "\r\n\r\n" + body.replace("\n", "\r\n")
    return text.encode("ascii")
