"""Selection hints (which account, which user, which purpose) and where they come from.

Hints arrive from three places, most specific first: attributes or hint headers on the
message, the :func:`sending_as` context manager (for code you cannot edit, such as
Django's password-reset view or a third-party app), and the backend's options
(``MAILERS`` OPTIONS or ``get_connection()`` keyword arguments).

An account hint is an ``SmtpAccount``, its primary key as an ``int``, or its name as a
string; :func:`selection.resolve_account` matches the first two by primary key only and
a string by name only. Headers carry text, so the ``X-MultiSMTP-Account`` header is
read as a primary key when it is all digits (account names never are) and as a name
otherwise.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Hints:
    #: An ``SmtpAccount`` or its primary key (an ``int``): matched by primary key only;
    #: or its name (a ``str``): matched by name only.
    account: Any = None
    #: A user instance, primary key or user name.
    user: Any = None
    purpose: str | None = None
    #: How to share the message among equally eligible accounts: "spread",
    #: "round_robin" or "fill_first" (None: the purpose's ``POOL_POLICY``).
    pool: str | None = None

    def over(self, other: Hints) -> Hints:
        """These hints, with ``other`` filling what is not set here."""
        return Hints(
            **{
                f.name: getattr(self, f.name)
                if getattr(self, f.name) is not None
                else getattr(other, f.name)
                for f in fields(self)
            }
        )

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))


#: Message attributes read as hints (set them directly or through MultiSMTPMessageMixin).
MESSAGE_ATTRIBUTES = {
    "account": "smtp_account",
    "user": "smtp_user",
    "purpose": "smtp_purpose",
    "pool": "smtp_pool",
}
#: Headers read as hints and removed before the message is rendered. The account header
#: is a primary key when it is all digits, else a name (see :func:`header_account`).
HINT_HEADERS = {
    "x-multismtp-account": "account",
    "x-multismtp-user": "user",
    "x-multismtp-purpose": "purpose",
    "x-multismtp-pool": "pool",
}

_current: contextvars.ContextVar[Hints] = contextvars.ContextVar(
    "django_multismtp_hints",
    default=Hints(),  # noqa: B039 (Hints is immutable)
)


@contextlib.contextmanager
def sending_as(
    *,
    account: Any = None,
    user: Any = None,
    purpose: str | None = None,
    pool: str | None = None,
) -> Iterator[Hints]:
    """Route mail sent inside the block, e.g. ``with sending_as(user=request.user):``.

    Nested blocks inherit what they do not set. Works per thread and per asyncio task.
    """
    hints = Hints(account=account, user=user, purpose=purpose, pool=pool).over(_current.get())
    token = _current.set(hints)
    try:
        yield hints
    finally:
        _current.reset(token)


def context_hints() -> Hints:
    return _current.get()


def header_account(value: str) -> int | str:
    """The account an ``X-MultiSMTP-Account`` header names: digits are a primary key
    (account names are never all digits), anything else a name."""
    text = value.strip()
    if text.isascii() and text.isdigit() and len(text) <= 20:
        return int(text)
    return value  # (a longer run of digits is refused as a hint by the selection)


def message_hints(message: Any) -> Hints:
    """Hints carried by one message (attributes first, then hint headers)."""
    values: dict[str, Any] = {}
    headers = getattr(message, "extra_headers", None) or {}
    for name, value in headers.items():
        key = HINT_HEADERS.get(str(name).lower())
        if key is not None and value not in (None, ""):
            values[key] = header_account(str(value)) if key == "account" else str(value)
    for key, attribute in MESSAGE_ATTRIBUTES.items():
        value = getattr(message, attribute, None)
        if value is not None:
            values[key] = value
    return Hints(**values)
